"""``record_metric`` from any process, and the per-step reduction of what was recorded (issue 7, item 6).

How values reach the controller: through a per-run **metrics directory**. The controller's
:class:`~forge.observability.logger.MetricLogger` creates ``<run_dir>/metrics/`` and exports its path as
``FORGE_METRICS_DIR``; every process started afterwards (Monarch procs, vLLM workers) inherits it. A call to
:func:`record_metric` appends one JSON line ``{"k", "v", "r", "t"}`` to ``<dir>/<host>-<pid>.jsonl`` of the calling
process (one ``write`` of a line, flushed at once, so a record is visible to the controller as soon as the call
returns and survives a crash of the recording process). At each step the controller reads the new complete lines of
every file (:class:`MetricCollector`) and reduces them per key.

Why files and not an endpoint: any code can record (engines, losses, vLLM workers, threads) without knowing
about actors; no actor needs a flush endpoint; and nothing is lost when an actor dies. The cost is one small
``write`` per record (a few µs), negligible next to a training step.

A "step" is the window between two collections: everything recorded after collection ``s-1`` and before collection
``s`` belongs to step ``s``. A trainer endpoint that records its loss before returning is therefore always counted
in the step the controller closes after awaiting it.

Without a metrics directory (a unit test, a notebook) records go to a bounded in-process buffer that
:func:`drain_local` empties.

Reductions (``reduce=``): ``mean``, ``sum``, ``max``, ``min``, ``std`` (population standard deviation, ddof=0),
``last`` (the most recent record by wall-clock time, across processes).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "METRICS_DIR_ENV",
    "REDUCTIONS",
    "MetricCollector",
    "drain_local",
    "record_metric",
    "reduce_records",
    "set_metrics_dir",
]

METRICS_DIR_ENV = "FORGE_METRICS_DIR"
REDUCTIONS = ("mean", "sum", "max", "min", "std", "last")
_LOCAL_CAPACITY = 100_000  # records kept in memory when no metrics directory is configured


class _ProcessSink:
    """This process's destination for records: an append-only file, or a bounded in-memory buffer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dir: str | None = None
        self.file = None
        self.pid = -1
        self.local: collections.deque = collections.deque(maxlen=_LOCAL_CAPACITY)
        self.warned = False

    def write(self, record: dict[str, Any]) -> None:
        with self.lock:
            target = os.environ.get(METRICS_DIR_ENV) or None
            if target != self.dir or os.getpid() != self.pid:  # env changed, or we are a forked child
                self._open(target)
            if self.file is None:
                if not self.local and not self.warned:
                    self.warned = True  # once per process: the usual cause is an actor spawned before the logger
                    logging.getLogger(__name__).info(
                        "record_metric: %s is not set in process %d; records stay in memory (create the "
                        "MetricLogger before spawning actors to collect them)", METRICS_DIR_ENV, os.getpid())
                self.local.append(record)
            else:
                self.file.write(json.dumps(record, separators=(",", ":")) + "\n")
                self.file.flush()

    def _open(self, target: str | None) -> None:
        if self.file is not None and self.pid == os.getpid():
            self.file.close()
        self.file, self.dir, self.pid = None, target, os.getpid()
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            name = f"{socket.gethostname()}-{os.getpid()}.jsonl"
            self.file = open(Path(target) / name, "a", encoding="utf-8")


_SINK = _ProcessSink()


def set_metrics_dir(path: str | os.PathLike | None) -> None:
    """Point this process (and processes it starts later) at a metrics directory; ``None`` = in-memory buffer."""
    if path is None:
        os.environ.pop(METRICS_DIR_ENV, None)
    else:
        Path(path).mkdir(parents=True, exist_ok=True)
        os.environ[METRICS_DIR_ENV] = str(Path(path).resolve())


def record_metric(key: str, value: Any, reduce: str = "mean") -> None:
    """Record one value of metric ``key`` (``component/quantity``), reduced per step with ``reduce``.

    Callable from any process and thread. ``value``: a Python/NumPy number, a bool, or a one-element tensor.
    Raises ``ValueError`` for an unknown reduction. (A key recorded with two reductions in one step is reduced with
    the first one seen, with a warning.)
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"record_metric({key!r}): unknown reduce={reduce!r}; choose one of {list(REDUCTIONS)}")
    if not isinstance(key, str) or not key:
        raise ValueError(f"record_metric: key must be a non-empty string like 'loss/kl', got {key!r}")
    _SINK.write({"k": key, "v": _as_float(key, value), "r": reduce, "t": time.time()})


def drain_local() -> list[dict[str, Any]]:
    """Take every record buffered in memory by this process (used when no metrics directory is set)."""
    with _SINK.lock:
        out = list(_SINK.local)
        _SINK.local.clear()
    return out


def _as_float(key: str, value: Any) -> float:
    if hasattr(value, "item") and callable(value.item):  # torch / numpy scalars and one-element tensors
        try:
            value = value.item()
        except (ValueError, RuntimeError) as e:
            raise TypeError(f"record_metric({key!r}): value must hold one number, got {value!r}") from e
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f"record_metric({key!r}): value must be a number, got {type(value).__name__} {value!r}")


def reduce_records(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Reduce records ``{"k", "v", "r", "t"}`` to one value per key (see the module docstring for the rules)."""
    groups: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    reduce_of: dict[str, str] = {}
    for rec in records:
        key = rec["k"]
        first = reduce_of.setdefault(key, rec["r"])
        if first != rec["r"]:
            warnings.warn(f"metric {key!r} was recorded with reduce={first!r} and {rec['r']!r}; using {first!r}")
        groups[key].append((rec["t"], rec["v"]))
    return {key: _reduce(reduce_of[key], vals) for key, vals in groups.items()}


def _reduce(how: str, timed_values: list[tuple[float, float]]) -> float:
    values = [v for _, v in timed_values]
    if how == "mean":
        return math.fsum(values) / len(values)
    if how == "sum":
        return math.fsum(values)
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    if how == "std":
        mean = math.fsum(values) / len(values)
        return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if how == "last":
        return max(timed_values, key=lambda tv: tv[0])[1]
    raise ValueError(f"unknown reduction {how!r}; choose one of {list(REDUCTIONS)}")


class MetricCollector:
    """Reads the records appended to a metrics directory since the previous :meth:`collect` (controller side).

    Keeps a byte offset per file and only consumes complete lines, so a record being written concurrently is
    picked up at the next collection, never half-read.
    """

    def __init__(self, metrics_dir: str | os.PathLike) -> None:
        self.dir = Path(metrics_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._offsets: dict[str, int] = {}

    def collect(self) -> list[dict[str, Any]]:
        """Every complete record written since the last call, from every process."""
        records: list[dict[str, Any]] = []
        for path in sorted(self.dir.glob("*.jsonl")):
            start = self._offsets.get(path.name, 0)
            with open(path, "rb") as f:
                f.seek(start)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # only complete lines
            for line in chunk[:end].splitlines():
                if line.strip():
                    records.append(json.loads(line))
            self._offsets[path.name] = start + end
        return records
