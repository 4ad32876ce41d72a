"""Timing helpers for the per-step breakdown: ``time/generate``, ``time/reward``, ``time/reference``,
``time/train``, ``time/weight_sync``, ``time/step`` and ``time/idle``.

``timed(name)`` times one block anywhere (a rollout coroutine, an engine) and records ``time/<name>`` in seconds.
``Timer`` times the sections of one loop iteration and, at :meth:`Timer.lap`, records each section's total, the
iteration's wall time ``time/step`` and ``time/idle`` = step time minus the timed sections (in the training loop of
async GRPO that is the time spent waiting for a batch).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from forge.observability.metrics import record_metric

__all__ = ["Timer", "timed"]


@contextmanager
def timed(name: str, reduce: str = "mean") -> Iterator[None]:
    """Record the wall time of the block as ``time/<name>`` (seconds), also when it raises."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        record_metric(f"time/{name}", time.perf_counter() - t0, reduce)


class Timer:
    """Wall-time breakdown of one loop iteration (see the module docstring)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._sections: dict[str, float] = defaultdict(float)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Add the block's wall time to section ``name`` of the current iteration."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sections[name] += time.perf_counter() - t0

    def lap(self) -> dict[str, float]:
        """End the iteration: record and return ``time/<section>``, ``time/step`` and ``time/idle``; restart."""
        now = time.perf_counter()
        step = now - self._start
        out = {f"time/{k}": v for k, v in self._sections.items()}
        out["time/step"] = step
        out["time/idle"] = max(0.0, step - sum(self._sections.values()))
        for key, value in out.items():
            record_metric(key, value, "mean")  # one lap per step: the mean is the value; matches timed()
        self._start, self._sections = now, defaultdict(float)
        return out
