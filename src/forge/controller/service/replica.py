"""One replica of a service: its actor handle, health state, and request metrics.

A replica keeps a stable `name` (`<service>_r<i>`) across restarts; `generation` increments on every
restart so that a failure reported by a call to an old incarnation never marks the new one unhealthy.
"""

from __future__ import annotations

import enum
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

# Latencies kept per replica for the median in metrics.
_LATENCY_WINDOW = 512


class ReplicaState(enum.Enum):
    STARTING = "starting"  # being launched (first start or restart)
    HEALTHY = "healthy"  # receives requests
    UNHEALTHY = "unhealthy"  # failed; a restart is pending or running
    STOPPED = "stopped"  # service shut down


@dataclass(frozen=True)
class ReplicaMetrics:
    """A snapshot of one replica's counters."""

    name: str  # stable replica name
    state: str  # ReplicaState value
    healthy: bool  # state == healthy
    requests: int  # requests sent to this replica (retries counted where they were sent)
    errors: int  # application exceptions raised by its endpoints
    failures: int  # requests lost to a replica failure (re-sent elsewhere)
    queue_depth: int  # requests in flight or queued on it right now
    latency_ms_mean: float  # mean latency of completed requests (ms), 0 if none
    latency_ms_p50: float  # median over the last 512 completed requests (ms), 0 if none
    restarts: int  # times it was restarted
    last_failure: str  # why it last failed ("" if never)
    pids: tuple[int, ...]  # process ids of its current incarnation (empty until it answered a ping)


class Replica:
    """Mutable per-replica record owned by the service (touched only from the controller's event loop)."""

    def __init__(self, index: int, name: str):
        self.index = index
        self.name = name
        self.state = ReplicaState.STARTING
        self.actor: Any = None  # Monarch actor mesh handle of the current incarnation
        self.procs = 1
        self.generation = 0
        self.endpoints: dict[str, Any] = {}  # endpoint name -> bound endpoint of the current actor
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self.failures = 0
        self.completed = 0
        self.latency_total_s = 0.0
        self.latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self.restarts = 0
        self.last_failure = ""
        self.pids: tuple[int, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.state is ReplicaState.HEALTHY

    def attach(self, actor: Any, procs: int) -> None:
        """Point this replica at a freshly launched actor (a new incarnation)."""
        self.actor = actor
        self.procs = procs
        self.generation += 1
        self.endpoints = {}

    def endpoint(self, name: str) -> Any:
        ep = self.endpoints.get(name)
        if ep is None:
            ep = self.endpoints[name] = getattr(self.actor, name)
        return ep

    def record(self, started: float) -> None:
        dt = time.perf_counter() - started
        self.completed += 1
        self.latency_total_s += dt
        self.latencies.append(dt)

    def metrics(self) -> ReplicaMetrics:
        lat = list(self.latencies)
        return ReplicaMetrics(
            name=self.name, state=self.state.value, healthy=self.healthy, requests=self.requests,
            errors=self.errors, failures=self.failures, queue_depth=self.in_flight,
            latency_ms_mean=1e3 * self.latency_total_s / self.completed if self.completed else 0.0,
            latency_ms_p50=1e3 * statistics.median(lat) if lat else 0.0, restarts=self.restarts,
            last_failure=self.last_failure, pids=self.pids,
        )
