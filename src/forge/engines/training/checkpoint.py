"""Exact checkpoint and resume with ``torch.distributed.checkpoint`` (DCP).

A checkpoint is one DCP folder holding everything a continued run reads: the sharded model and optimizer state
(``get_state_dict``, so each rank writes only its own shards), the LR scheduler, the step counter and policy
version (torchforge #362: a resume that restarts the step counter restarts the LR schedule too), and every rank's
RNG states under its own key. Loading into a freshly built engine and continuing reproduces an uninterrupted run
bit for bit in float32 (tested). RNG states are restored only when the saved world size equals the current one;
model/optimizer state reshards to any world size.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict


def step_dir(folder: str | Path, step: int) -> Path:
    """``<folder>/step_<step>``: where ``save(step)`` writes."""
    return Path(folder) / f"step_{step}"


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save_checkpoint(path: Path, model, optimizer, lr_scheduler, train_state: dict[str, int], device) -> Path:
    """Write a DCP checkpoint to ``path`` (collective: every rank calls it)."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    rank, world = dist.get_rank(), dist.get_world_size()
    state = {
        "model": model_sd,
        "optimizer": optim_sd,
        "lr_scheduler": lr_scheduler.state_dict(),
        "train_state": dict(train_state, world_size=world),
        f"rng/rank{rank}": _rng_state(device),
    }
    dcp.save(state, checkpoint_id=str(path))
    return path


def load_checkpoint(path: Path, model, optimizer, lr_scheduler, device) -> dict[str, int]:
    """Load ``path`` into the given (already sharded) model/optimizer/scheduler; returns the train state."""
    if not (path / ".metadata").exists():
        raise FileNotFoundError(f"{path} is not a DCP checkpoint (no .metadata); save(step) writes <folder>/step_<n>")
    saved_keys = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata.keys()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    rank = dist.get_rank()
    rng_key = f"rng/rank{rank}"
    state: dict[str, Any] = {
        "model": model_sd,
        "optimizer": optim_sd,
        "lr_scheduler": lr_scheduler.state_dict(),
        "train_state": {"step": 0, "policy_version": 0, "world_size": 0},
    }
    has_rng = any(k.startswith(rng_key + ".") or k == rng_key for k in saved_keys)
    if has_rng:
        state[rng_key] = _rng_state(device)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    train_state = state["train_state"]
    if has_rng and train_state["world_size"] == dist.get_world_size():
        _set_rng_state(state[rng_key], device)
    return {"step": int(train_state["step"]), "policy_version": int(train_state["policy_version"])}


def prune_checkpoints(folder: str | Path, keep_latest: int | None) -> None:
    """Delete all but the newest ``keep_latest`` step folders (rank 0 only; call after a barrier)."""
    if keep_latest is None or dist.get_rank() != 0:
        return
    steps = sorted(
        (int(p.name.split("_", 1)[1]), p) for p in Path(folder).glob("step_*") if p.name.split("_", 1)[1].isdigit()
    )
    for _, p in steps[:-keep_latest]:
        shutil.rmtree(p, ignore_errors=True)
