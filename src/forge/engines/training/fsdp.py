"""The training engine: a Hugging Face causal LM under FSDP2, AdamW, warmup + cosine, exact gradient accumulation.

Plain PyTorch, usable without Monarch: build one ``TrainingEngine`` per process (single process, ``torchrun``,
or a ``ForgeActor`` with ``procs=N``) and call it the same way on every rank.

Data parallelism: **every rank receives the whole step batch** and trains on its own contiguous block of rows
(``rows [r·B/W, (r+1)·B/W)``), so a controller broadcasts one batch (``trainer.train_step.call(batch)``) and never
needs the world size. B must be a multiple of W.

Gradient accumulation: each rank splits its rows into micro-batches of ``training.micro_batch_size``. The loss's
normaliser is computed once from the whole step batch (all micro-batches of all ranks — every rank has it) and
passed to every micro-batch, so the accumulated gradient equals that of one big batch. FSDP2's reduce-scatter
*averages* over the W ranks, while the big-batch gradient is the *sum* of the ranks' shares: each micro-batch loss
is therefore multiplied by W before backward (reported values are not).

Departures from a textbook trainer: no attention mask is passed — rows are right padded and attention is causal,
so padding never influences a scored position (packed SFT rows carry ``position_ids``, from which transformers
builds the per-document mask); metrics of the loss are averaged over micro-batches and ranks
weighted by their trained-token counts.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from forge.engines.training import checkpoint as ckpt
from forge.engines.training.config import LRSchedulerConfig, TrainerConfig
from forge.engines.training.distributed import World, all_reduce, init_world, local_rows
from forge.engines.training.export import export_hf, hf_state_dict
from forge.engines.training.losses import (
    Batch,
    CrossEntropyLoss,
    build_step_loss,
    combine_metrics,
    forward_logits,
    mask_of,
    select_rows,
    to_device,
    validate_batch,
)
from forge.engines.training.modeling import DTYPES, load_hf_model, resolve_param_dtype, shard_model
from forge.types import ForwardBackwardResult, RLBatch, TextTrainBatch


class WarmupCosine:
    """LR factor: linear warmup over ``warmup_steps``, cosine to ``min_lr_factor`` over ``decay_steps``, then flat.

    A callable object (not a closure) so ``LambdaLR.state_dict()`` can save it.
    """

    def __init__(self, cfg: LRSchedulerConfig):
        self.warmup, self.decay, self.floor = cfg.warmup_steps, cfg.decay_steps, cfg.min_lr_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.decay is None:
            return 1.0
        progress = min(1.0, (step - self.warmup) / self.decay)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TrainingEngine:
    """One rank of an FSDP2 trainer. ``__init__`` stores the config; ``setup()`` builds everything."""

    def __init__(self, config: TrainerConfig):
        self.config = config
        self.world: World | None = None
        self.model = None
        self.optimizer = None
        self.lr_scheduler = None
        self.step = 0  # optimizer steps taken
        self.policy_version = 0  # version of the weights last pushed (or restored)
        self._losses: dict[str, Any] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Join the process group, load + shard the model, build AdamW and the LR schedule (idempotent)."""
        if self.model is not None:
            return
        cfg = self.config
        self.world = init_world(cfg.training.device)
        torch.manual_seed(cfg.training.seed)
        model = load_hf_model(cfg.model, self.world.device, cfg.training.seed)
        model.train()
        self.param_dtype = resolve_param_dtype(cfg.training.param_dtype, self.world.device)
        reduce_dtype = resolve_param_dtype(cfg.training.reduce_dtype, self.world.device)
        self.model = shard_model(
            model,
            self.world,
            self.param_dtype,
            reduce_dtype,
            activation_checkpoint=cfg.activation_checkpoint.mode == "full",
            compile_layers=cfg.compile.enable,
        )
        o = cfg.optimizer
        fused = o.fused if o.fused is not None else self.world.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=o.lr,
            betas=o.betas,
            eps=o.eps,
            weight_decay=o.weight_decay,
            fused=fused or None,
            foreach=None if fused else True,
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, WarmupCosine(cfg.lr_scheduler))

    def cleanup(self) -> None:
        """Free the model and optimizer; destroy the process group if this engine created it."""
        owns = self.world is not None and self.world.owns_process_group
        self.model = self.optimizer = self.lr_scheduler = None
        self._losses.clear()
        if owns and dist.is_initialized():
            dist.destroy_process_group()
        self.world = None

    def _require_setup(self) -> World:
        if self.model is None or self.world is None:
            raise RuntimeError("TrainingEngine.setup() has not been called (or cleanup() already ran)")
        return self.world

    # ---- training --------------------------------------------------------------------------------------------
    def _loss_for(self, batch: Batch):
        if isinstance(batch, TextTrainBatch):
            name, kwargs = CrossEntropyLoss.name, {}
        else:
            name, kwargs = self.config.loss.name, self.config.loss.kwargs
            if name == CrossEntropyLoss.name:
                raise ValueError(
                    "got an RLBatch but loss.name is 'cross_entropy' (for TextTrainBatch); "
                    "configure a forge.rl.loss name such as 'grpo'"
                )
        if name not in self._losses:
            self._losses[name] = build_step_loss(name, kwargs)
        return self._losses[name]

    def normalizer(self, batch: Batch) -> float:
        """The loss denominator of ``batch`` taken as one whole optimizer step (e.g. its trained-token count)."""
        return self._loss_for(batch).normalizer(batch)

    def forward_backward(self, batch: Batch, normalizer: float | None = None) -> ForwardBackwardResult:
        """Accumulate the gradient of ``batch`` (the full step batch; this rank takes its rows).

        ``normalizer`` overrides the denominator: pass ``normalizer(union of batches)`` when one optimizer step
        spans several ``forward_backward`` calls. Returns the step loss summed over ranks and token-weighted loss
        metrics (identical on every rank).
        """
        world = self._require_setup()
        validate_batch(batch)
        loss_fn = self._loss_for(batch)
        norm = float(normalizer) if normalizer is not None else loss_fn.normalizer(batch)
        local = select_rows(batch, local_rows(batch.input_ids.shape[0], world))
        row_tokens = (mask_of(local) != 0).sum(dim=1).tolist()  # on the host: no device sync per micro-batch
        mbs = self.config.training.micro_batch_size
        temperature = self.config.training.temperature
        loss_sum = torch.zeros((), dtype=torch.float64, device=world.device)
        parts: list[tuple[float, dict[str, float]]] = []
        for start in range(0, local.input_ids.shape[0], mbs):
            mb = to_device(select_rows(local, slice(start, start + mbs)), world.device)
            logits = forward_logits(self.model, mb)  # [b, T, V]
            loss, metrics = loss_fn(logits, mb, norm, temperature)
            (loss * world.world_size).backward()
            loss_sum += loss.detach().double()
            parts.append((float(sum(row_tokens[start : start + mbs])), metrics))
        reduce = lambda values, op: all_reduce(values, world, op)
        total_loss, num_tokens = reduce([loss_sum.item(), sum(w for w, _ in parts)], "sum")
        out = combine_metrics(parts, reduce)
        out["trainer/num_tokens"] = num_tokens
        return ForwardBackwardResult(loss=total_loss, metrics=out)

    def optim_step(self) -> dict[str, float]:
        """Clip the accumulated gradient, step AdamW and the schedule, zero the gradient."""
        self._require_setup()
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.config.training.max_norm
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()  # DTensor: partial norms of the shards → the global norm
        if max_norm:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, grad_norm, foreach=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"trainer/grad_norm": float(grad_norm.item()), "trainer/lr": lr, "trainer/step": float(self.step)}

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on ``batch``: forward_backward + optim_step. Returns the metrics (same on all ranks)."""
        t0 = time.perf_counter()
        result = self.forward_backward(batch)
        metrics = self.optim_step()
        elapsed = time.perf_counter() - t0
        tokens = batch.input_ids.numel()  # all positions of all rows, i.e. of every rank
        return {"loss": result.loss, **result.metrics, **metrics, "trainer/tokens_per_s": tokens / elapsed}

    def clear_gradients(self) -> None:
        """Drop any accumulated gradient (e.g. after forward_backward calls that will not be stepped)."""
        self._require_setup()
        self.optimizer.zero_grad(set_to_none=True)

    # ---- checkpoints and weights -----------------------------------------------------------------------------
    def save(self, step: int | None = None) -> str:
        """DCP checkpoint to ``<checkpoint.folder>/step_<step>`` (default: the current step). Collective."""
        world = self._require_setup()
        step = self.step if step is None else int(step)
        path = ckpt.step_dir(self.config.checkpoint.folder, step)
        state = {"step": self.step, "policy_version": self.policy_version}
        ckpt.save_checkpoint(path, self.model, self.optimizer, self.lr_scheduler, state, world.device)
        dist.barrier()
        ckpt.prune_checkpoints(self.config.checkpoint.folder, self.config.checkpoint.keep_latest)
        return str(path)

    def load(self, step_or_path: int | str) -> dict[str, int]:
        """Restore a checkpoint by step number (under ``checkpoint.folder``) or folder path. Collective."""
        world = self._require_setup()
        if isinstance(step_or_path, int) or str(step_or_path).isdigit():
            path = ckpt.step_dir(self.config.checkpoint.folder, int(step_or_path))
        else:
            path = Path(step_or_path)
        state = ckpt.load_checkpoint(path, self.model, self.optimizer, self.lr_scheduler, world.device)
        self.step, self.policy_version = state["step"], state["policy_version"]
        return state

    def export_dtype(self) -> torch.dtype:
        spec = self.config.model.export_dtype
        if spec != "auto":
            return DTYPES[spec]
        saved = getattr(self.model.config, "dtype", None)
        saved = getattr(torch, saved) if isinstance(saved, str) else saved
        return saved if isinstance(saved, torch.dtype) else torch.float32

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """HF name → this rank's shard (DTensor) in the export dtype. No communication."""
        self._require_setup()
        return hf_state_dict(self.model, self.export_dtype())

    async def push_weights(self, version: int) -> dict[str, float]:
        """Put this rank's HF-named shards under ``policy_prefix(version)`` and commit them (every rank)."""
        world = self._require_setup()
        import forge.store as ws

        t0 = time.perf_counter()
        state = self.hf_state_dict()
        prefix = ws.policy_prefix(version)
        await ws.put_state_dict(state, prefix)
        # Every rank commits its own part; the store marks the version complete when all W have.
        await ws.commit(prefix, rank=world.rank, world_size=world.world_size)
        self.policy_version = int(version)
        nbytes = sum(t.to_local().nbytes if hasattr(t, "to_local") else t.nbytes for t in state.values())
        return {"trainer/push_s": time.perf_counter() - t0, "trainer/push_bytes_per_rank": float(nbytes)}

    def export(self, path: str) -> str:
        """A plain HF directory (safetensors + config + tokenizer) that transformers and vLLM load. Collective."""
        self._require_setup()
        return str(export_hf(self.model, self.config.model.path, path, self.export_dtype()))

    # ---- introspection ---------------------------------------------------------------------------------------
    def get_status(self) -> dict[str, Any]:
        world = self.world
        return {
            "ready": self.model is not None,
            "step": self.step,
            "policy_version": self.policy_version,
            "rank": world.rank if world else None,
            "world_size": world.world_size if world else None,
            "device": str(world.device) if world else None,
            "lr": self.optimizer.param_groups[0]["lr"] if self.optimizer else None,
        }


__all__ = ["RLBatch", "TextTrainBatch", "TrainingEngine", "WarmupCosine"]
