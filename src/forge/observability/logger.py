"""``MetricLogger``: reduces the recorded metrics once per step and writes them to the configured backends.

Backends (``MetricLoggerConfig.backends``):
  console      one compact line per step (selected keys) above a tqdm progress bar
  jsonl        ``<run_dir>/metrics.jsonl``, one JSON object per step: ``{"step": s, "time": t, key: value, ...}``
  tensorboard  ``<run_dir>/tensorboard/`` through ``torch.utils.tensorboard.SummaryWriter``
  wandb        Weights & Biases, optional import; ``wandb_mode="offline"`` writes under ``<run_dir>/wandb``

Create the logger in the controller **before** spawning actors: it exports ``FORGE_METRICS_DIR`` so every
process started afterwards records into this run (see :mod:`forge.observability.metrics`).

    logger = MetricLogger(MetricLoggerConfig(), run_dir, total_steps=200, config=forge.config.to_dict(cfg))
    for step in range(1, 201):
        ...                                     # actors call record_metric(...)
        logger.log_step(step, {"eval/accuracy": acc})
    logger.close()
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forge.observability.metrics import (
    METRICS_DIR_ENV,
    MetricCollector,
    drain_local,
    reduce_records,
    set_metrics_dir,
)

__all__ = ["MetricLogger", "MetricLoggerConfig"]

BACKENDS = ("console", "jsonl", "tensorboard", "wandb")
CONSOLE_KEYS = ("reward/mean", "eval/", "loss/total", "loss/kl", "entropy", "time/step")  # the compact line's keys


@dataclass(frozen=True)
class MetricLoggerConfig:
    """Where per-step metrics go."""

    backends: tuple[str, ...] = ("console", "jsonl")  # any of: console, jsonl, tensorboard, wandb
    console_keys: tuple[str, ...] = CONSOLE_KEYS  # key substrings shown on the console line; () = every key
    progress_bar: bool = True  # tqdm bar under the console lines (only on a terminal)
    wandb_project: str = "forge"  # W&B project name
    wandb_mode: str = "offline"  # W&B mode: offline (no network), online or disabled

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ValueError(f"unknown metric backend(s) {unknown}; choose from {list(BACKENDS)}")


class MetricLogger:
    """Collects every process's records per step, reduces them and writes one row per step to each backend."""

    def __init__(
        self,
        cfg: MetricLoggerConfig,
        run_dir: str | os.PathLike,
        total_steps: int | None = None,
        config: dict[str, Any] | None = None,
        run_name: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_dir = self.run_dir / "metrics"
        self._previous_dir = os.environ.get(METRICS_DIR_ENV)
        set_metrics_dir(self.metrics_dir)  # inherited by processes spawned from now on
        self.collector = MetricCollector(self.metrics_dir)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.history: list[dict[str, float]] = []
        self._backends = [_make_backend(b, cfg, self, total_steps, config, run_name) for b in cfg.backends]

    def log_step(self, step: int, metrics: dict[str, Any] | None = None) -> dict[str, float]:
        """Close step ``step``: reduce what was recorded since the last call, add ``metrics``, write a row.

        ``metrics`` values that are ``None`` are skipped. Returns the row (``{"step": step, "time": t, key: value}``).
        """
        records = self.collector.collect() + drain_local()
        row: dict[str, float] = {"step": step, "time": time.time()}
        row.update(sorted(reduce_records(records).items()))
        for key, value in (metrics or {}).items():
            if value is None:  # e.g. an eval metric on a step without evaluation
                continue
            try:
                row[key] = float(value.item() if hasattr(value, "item") else value)
            except (TypeError, ValueError) as e:
                raise TypeError(f"log_step({step}): metric {key!r} must be a number, got {value!r}") from e
        self.history.append(row)
        for backend in self._backends:
            backend.log(step, row)
        return row

    def close(self) -> None:
        """Flush and close every backend (idempotent)."""
        for backend in self._backends:
            backend.close()
        if self._backends:
            set_metrics_dir(self._previous_dir)  # this process records where it did before the logger
        self._backends = []

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_backend(name, cfg, logger, total_steps, config, run_name):
    if name == "console":
        return _Console(cfg, total_steps)
    if name == "jsonl":
        return _Jsonl(logger.jsonl_path)
    if name == "tensorboard":
        return _TensorBoard(logger.run_dir / "tensorboard")
    return _Wandb(cfg, logger.run_dir, config, run_name)


def _fmt(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def _short(key: str) -> str:
    return key.replace("reward/", "rew/").replace("time/", "t/")


class _Console:
    """One compact line per step, printed above a tqdm progress bar."""

    def __init__(self, cfg: MetricLoggerConfig, total_steps: int | None) -> None:
        from tqdm.auto import tqdm

        self.keys = cfg.console_keys
        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, disable=None) if cfg.progress_bar else None
        self.total = total_steps

    def log(self, step: int, row: dict[str, float]) -> None:
        shown = [
            f"{_short(k)}={_fmt(v)}"
            for k, v in row.items()
            if k not in ("step", "time") and (not self.keys or any(s in k for s in self.keys))
        ]
        head = f"step {step}/{self.total}" if self.total else f"step {step}"
        line = " | ".join([head, *shown])
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line)
            self.bar.update(step - self.bar.n)
        else:
            print(line, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Jsonl:
    def __init__(self, path: Path) -> None:
        self.f = open(path, "a", encoding="utf-8")

    def log(self, step: int, row: dict[str, float]) -> None:
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class _TensorBoard:
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, row: dict[str, float]) -> None:
        for k, v in row.items():
            if k not in ("step", "time"):
                self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, cfg: MetricLoggerConfig, run_dir: Path, config, run_name) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("the 'wandb' metric backend needs W&B: pip install wandb (or drop it from backends)") from e
        self.run = wandb.init(
            project=cfg.wandb_project, mode=cfg.wandb_mode, dir=str(run_dir), config=config, name=run_name
        )

    def log(self, step: int, row: dict[str, float]) -> None:
        self.run.log({k: v for k, v in row.items() if k not in ("step", "time")}, step=step)

    def close(self) -> None:
        self.run.finish()
