"""Supervised fine-tuning on forge's trainer actor: ``python -m apps.sft.main [--config cfg.yaml] [k=v ...]``.

The same ``TitanTrainer`` the GRPO app uses, fed ``TextTrainBatch``es (prompt-masked cross-entropy, optional
packing) from ``forge.data.SFTBatcher``. Every ``eval.every_steps`` it reports the held-out token loss and, when
``eval.accuracy_samples > 0``, the held-out greedy accuracy measured by a vLLM generator that receives the trainer's
weights through the store (exactly as in GRPO). ``eval.stop_at_accuracy`` stops at the first evaluation that
reaches it — the CPU demo's warm start (SFT accuracy on the arithmetic task jumps suddenly, so a fixed step count
would hand GRPO anything from 5% to 60%). The result is exported as a plain HF directory the GRPO app loads.

``warm_start(config_path)`` is what a GRPO config's ``model: sft:<sft config>`` resolves through: it runs this SFT
once and caches the export under ``<cache>/sft/<hash of the config>/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import forge.config
import forge.store as ws
from apps.common import RunDir, cache_dir, first, parse_args, resolve_model
from apps.sft.config import SFTConfig
from forge.actors.generator import Generator
from forge.actors.trainer import TitanTrainer
from forge.controller.actor import ForgeActor
from forge.data import PromptDataset, SFTBatcher, build_dataset, eval_batches, score_response
from forge.observability import MetricLogger, plot_run

DEFAULT_CONFIG = str(Path(__file__).with_name("demo_arith_cpu.yaml"))


async def held_out_loss(trainer: Any, batches: list) -> float:
    """Token-mean cross-entropy on held-out batches (forward_backward, then the gradient is dropped)."""
    total, tokens = 0.0, 0.0
    for batch in batches:
        result = first(await trainer.forward_backward.call(batch))
        n = float(batch.target_mask.sum())
        total, tokens = total + result.loss * n, tokens + n
    await trainer.clear_gradients.call()
    return total / tokens


async def held_out_accuracy(trainer: Any, policy: Any, version: int, samples: list, max_tokens: int) -> float:
    """Push the trainer's weights as ``version``, load them into the generator, greedy-decode, score."""
    await trainer.push_weights.call(version)
    await policy.update_weights.fanout(version)
    greedy = {"n": 1, "temperature": 0.0, "max_tokens": max_tokens}
    outs = await asyncio.gather(*[policy.generate.route(s.prompt, sampling_params=greedy) for s in samples])
    return sum(score_response(o[0].text, s) for o, s in zip(outs, samples)) / len(samples)


async def main(cfg: SFTConfig, resume: str | None = None) -> dict[str, Any]:
    """Run SFT as configured; returns the summary (also in ``<run>/summary.json``), with ``export_dir``."""
    t0 = time.time()
    run = RunDir.open(resume) if resume else RunDir.create(cfg.run.runs_dir, cfg.run.name)
    forge.config.save(cfg, run.path / "config.yaml")
    model_path = resolve_model(cfg.model, cache_dir(cfg.run.cache_dir), seed=cfg.run.seed)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ws.configure(f"/dev/shm/forge-store-sft-{os.getpid()}-{int(t0)}", keep_versions=2)
    logger = MetricLogger(cfg.metrics, run.path, total_steps=cfg.sft.steps, config=forge.config.to_dict(cfg),
                          run_name=run.path.name)
    s, e = cfg.sft, cfg.eval
    batcher = SFTBatcher(build_dataset(cfg.dataset, tokenizer), tokenizer, s.batch_size, s.seq_len, s.pack,
                         s.chat_template, s.system_prompt, seed=cfg.run.seed)
    held_out = build_dataset(e.dataset, tokenizer)
    loss_batches = list(eval_batches(PromptDataset(held_out.samples[: e.loss_samples], held_out.name),
                                     tokenizer, s.batch_size, s.seq_len, s.chat_template, s.system_prompt))
    trainer_cfg = cfg.trainer.engine_config(model_path, str(run.checkpoints), cfg.run.keep_checkpoints, cfg.run.seed)
    launches = [TitanTrainer.options(procs=cfg.trainer.procs, with_gpus=cfg.trainer.with_gpus).as_actor(trainer_cfg)]
    if e.accuracy_samples > 0:
        g = cfg.generator
        launches.append(Generator.options(procs=g.procs, num_replicas=g.num_replicas, with_gpus=g.with_gpus)
                        .as_service(engine_args={"seed": cfg.run.seed, **g.engine_args, "model": model_path},
                                    sampling_params=dict(g.sampling_params), backend=g.backend,
                                    weight_load=g.weight_load))
    step, stopped_early, accuracy, trainer, policy = 0, False, None, None, None
    try:
        actors = await asyncio.gather(*launches)
        trainer, policy = actors[0], (actors[1] if len(actors) > 1 else None)
        if resume and (run.path / "sft_state.json").exists():
            state = json.loads((run.path / "sft_state.json").read_text())
            first(await trainer.load.call(state["trainer_checkpoint"]))
            batcher.load_state_dict(state["batcher"])
            step = state["step"]
        while step < s.steps and not stopped_early:
            metrics = first(await trainer.train_step.call(batcher.next_batch()))
            step += 1
            row = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            if (e.every_steps and step % e.every_steps == 0) or step == s.steps:
                row["eval/loss"] = await held_out_loss(trainer, loss_batches)
                if policy is not None:
                    accuracy = await held_out_accuracy(trainer, policy, step, held_out.samples[: e.accuracy_samples],
                                                       e.max_tokens)
                    row["eval/accuracy"] = accuracy
                    stopped_early = e.stop_at_accuracy is not None and accuracy >= e.stop_at_accuracy
            logger.log_step(step, row)
            if "eval/loss" in row and "console" not in cfg.metrics.backends:
                acc = f" | held-out accuracy {100 * row['eval/accuracy']:.1f}%" if "eval/accuracy" in row else ""
                print(f"sft step {step}/{s.steps} | loss {row['loss']:.4f} | eval/loss {row['eval/loss']:.4f}{acc}",
                      flush=True)
            if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0:
                path = first(await trainer.save.call(step))
                state = {"step": step, "trainer_checkpoint": path, "batcher": batcher.state_dict()}
                (run.path / "sft_state.json").write_text(json.dumps(state))
        export = Path(cfg.run.export_dir) if cfg.run.export_dir else run.path / "hf"
        first(await trainer.export.call(str(export)))
    finally:
        for actor in (policy, trainer):
            if actor is not None:
                await ForgeActor.shutdown(actor)
        logger.close()
        shutil.rmtree(ws.get_store().config.root, ignore_errors=True)
    summary = {"run_dir": str(run.path), "steps": step, "export_dir": str(export), "stopped_early": stopped_early,
               "accuracy_after": accuracy, "wall_seconds": round(time.time() - t0, 1),
               "metrics": str(run.path / "metrics.jsonl")}
    if (run.path / "metrics.jsonl").exists():
        summary["plot"] = str(plot_run(run.path / "metrics.jsonl", run.path / "plot.png", title=run.path.name))
    run.write_summary(summary)
    acc = "" if accuracy is None else f", held-out accuracy {100 * accuracy:.1f}%"
    print(f"[forge] SFT done: {step} steps{acc}, {summary['wall_seconds']:.0f} s; HF model: {export}", flush=True)
    return summary


async def warm_start(config_path: str, cache: Path, overrides: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """The HF directory of the SFT run ``config_path`` describes, trained once and cached by the config's hash.

    Returns ``(export_dir, info)``; ``info`` says whether it was cached and how long the SFT took.
    """
    cfg = forge.config.load(SFTConfig, config_path, list(overrides))
    what = forge.config.to_dict(cfg)
    what.pop("metrics"), what["run"].pop("runs_dir")  # where logs go does not change the model
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    target = cache / "sft" / f"{cfg.run.name}-{key}"
    if (target / "config.json").exists():
        print(f"[forge] SFT warm start: cached {target}", flush=True)
        return str(target), {"sft_cached": True, "sft_model": str(target)}
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    summary = await main(forge.config.load(SFTConfig, config_path, [*overrides, f"run.export_dir={tmp}"]))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a crashed SFT never leaves a half-written cache entry
    return str(target), {"sft_cached": False, "sft_model": str(target), "sft_seconds": summary["wall_seconds"],
                         "sft_steps": summary["steps"], "sft_accuracy": summary["accuracy_after"],
                         "sft_run_dir": summary["run_dir"]}


if __name__ == "__main__":
    config, resume_dir = parse_args(SFTConfig, None, DEFAULT_CONFIG)
    asyncio.run(main(config, resume_dir))
