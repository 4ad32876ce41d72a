"""Routers: pick one healthy replica for a request.

A router sees only the current list of healthy replicas (the service keeps it up to date when health
changes, so no per-call filtering) and must be O(#replicas) or better with no locks: the routing path is
on every `route()` call and must stay within 1.2x of a raw Monarch call (issue 3, item 6).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Protocol

from forge.controller.service.replica import Replica


class Router(Protocol):
    def pick(self, healthy: Sequence[Replica]) -> Replica:
        """Return one replica of the non-empty `healthy`."""
        ...


class RoundRobinRouter:
    """Cycles through the healthy replicas in order."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, healthy: Sequence[Replica]) -> Replica:
        i = self._next % len(healthy)
        self._next = i + 1
        return healthy[i]


class LeastLoadedRouter:
    """Picks the replica with the fewest requests in flight (ties: the first in order, round-robin start)."""

    def __init__(self) -> None:
        self._start = 0

    def pick(self, healthy: Sequence[Replica]) -> Replica:
        n = len(healthy)
        start = self._start % n
        self._start = start + 1  # rotate the tie-break so equal loads still spread
        best = healthy[start]
        best_load = best.in_flight
        for k in range(1, n):
            r = healthy[(start + k) % n]
            if r.in_flight < best_load:
                best, best_load = r, r.in_flight
        return best


ROUTERS = {"round_robin": RoundRobinRouter, "least_loaded": LeastLoadedRouter}


def build_router(name: str) -> Router:
    """Router by name (`round_robin` or `least_loaded`); an unknown name lists the valid ones."""
    try:
        return ROUTERS[name]()
    except KeyError:
        close = difflib.get_close_matches(name, ROUTERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown router {name!r}{hint}; valid routers: {sorted(ROUTERS)}") from None
