"""`Service`: N replicas of a ForgeActor behind route / fanout / sessions, surviving dead replicas.

The service is an ordinary object in the controller's event loop (no extra actor, so `route()` adds only a
router pick and some counters to a raw Monarch call). Per request:

1. pick a healthy replica (the session's replica inside `async with svc.session()`, else the router's);
   with none healthy, wait up to `unavailable_timeout_s` for one, then raise `ServiceUnavailableError`;
2. send the call (`call_one` for a 1-process replica; `call` on every rank for an SPMD replica, returning
   rank 0's value);
3. an exception raised by the endpoint's code is re-raised at the caller with the remote traceback and is
   **not** retried; a replica failure (process died, actor unreachable) marks the replica unhealthy,
   starts its restart in the background, and re-sends the request to another healthy replica (up to
   `max_attempts` sends in all).

Delivery semantics (issue 3, item 4). Every `route()` call returns (or raises) exactly once. Requests queued
or in flight on a replica that fails are re-sent: the failed replica never delivered their results, so
each result reaches the caller exactly once. *Execution* is at-least-once: a request the dead replica had
partly or fully executed before dying runs again elsewhere. Its effects inside the dead process vanish with
it, but side effects it had on the outside world (files, the weight store, other actors) may happen twice,
so endpoints reached through a service should be idempotent or tolerate a repeat. A request whose own
execution kills every replica it lands on fails after `max_attempts` sends with `ReplicaFailedError`.

Health: every `health_interval_s` each healthy replica must answer a ping (a concurrent endpoint, so a long
request does not delay it) within `health_timeout_s`; a dead process is noticed by Monarch's supervision
watchdog (2 s, see faults.py). A restarted replica keeps its name `<service>_r<i>` and loses its state
(sessions bound to it move to another replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import difflib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any

from monarch.actor import ActorError

from forge.controller.faults import (
    ReplicaFailedError,
    ServiceUnavailableError,
    add_fault_listener,
    is_replica_failure,
    raise_remote,
    remove_fault_listener,
)
from forge.controller.service.interface import ServiceInterface, endpoint_names
from forge.controller.service.replica import Replica, ReplicaMetrics, ReplicaState
from forge.controller.service.router import ROUTERS, build_router

logger = logging.getLogger(__name__)

_PLACEMENT_FIELDS = ("name", "num_replicas", "procs", "hosts", "with_gpus")


@dataclass(frozen=True)
class ServiceConfig:
    """How a service places, routes to, checks and restarts its replicas."""

    name: str  # service name; replica i is named "<name>_r<i>" (stable across restarts)
    num_replicas: int = 1  # replicas to run
    procs: int = 1  # processes per replica
    hosts: int | None = None  # hosts per replica (None: the controller's host)
    with_gpus: bool = False  # one GPU per process of each replica
    router: str = "round_robin"  # "round_robin" or "least_loaded"
    health_interval_s: float = 2.0  # seconds between health pings of each healthy replica
    health_timeout_s: float = 30.0  # a replica not answering a ping within this is unhealthy
    unavailable_timeout_s: float = 120.0  # how long route() waits for a healthy replica before failing
    max_attempts: int = 3  # sends of one request before a chain of replica failures fails it
    start_timeout_s: float = 600.0  # launch + setup() of one replica must finish within this
    restart_backoff_s: float = 1.0  # first wait after a failed restart (doubles, capped at 30 s)

    def __post_init__(self) -> None:
        if self.num_replicas < 1:
            raise ValueError(f"service {self.name!r}: num_replicas must be >= 1, got {self.num_replicas}")
        if self.router not in ROUTERS:
            build_router(self.router)  # raises with the valid names
        for f in ("health_interval_s", "health_timeout_s", "unavailable_timeout_s", "start_timeout_s"):
            if not getattr(self, f) > 0:
                raise ValueError(f"service {self.name!r}: {f} must be > 0, got {getattr(self, f)}")
        if self.max_attempts < 1:
            raise ValueError(f"service {self.name!r}: max_attempts must be >= 1, got {self.max_attempts}")

    @classmethod
    def tunable_fields(cls) -> list[str]:
        """Fields `ForgeActor.options(**kwargs)` may set (placement has its own keywords)."""
        return [f.name for f in fields(cls) if f.name not in _PLACEMENT_FIELDS]

    @classmethod
    def check_fields(cls, kwargs: dict[str, Any], where: str) -> None:
        valid = cls.tunable_fields()
        for key in kwargs:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"{where}: unknown option {key!r}{hint}; valid service options: {valid}")

    @classmethod
    def from_actor_options(cls, actor_cls: type) -> ServiceConfig:
        """The config `as_service()` uses: placement attributes plus the extra `options()` kwargs."""
        name = actor_cls.mesh_name or actor_cls.__name__.lower()
        return cls(name=name, num_replicas=actor_cls.num_replicas, procs=actor_cls.procs,
                   hosts=actor_cls.hosts, with_gpus=actor_cls.with_gpus,
                   **actor_cls._forge_service_options)


@dataclass(frozen=True)
class ServiceMetrics:
    """A snapshot of a service's counters."""

    service: str  # service name
    replicas: list[ReplicaMetrics]  # one entry per replica, in index order
    healthy_replicas: int  # replicas receiving requests now
    retried_requests: int  # sends repeated because a replica failed
    active_sessions: int  # sessions started and not terminated
    extra: dict[str, Any] = field(default_factory=dict)  # reserved for router-specific figures

    def to_dict(self) -> dict[str, float]:
        """Flat `service/quantity` metrics (summed over replicas) for the metric loggers."""
        s = self.service
        out = {f"{s}/healthy_replicas": float(self.healthy_replicas),
               f"{s}/retried_requests": float(self.retried_requests)}
        for key in ("requests", "errors", "failures", "queue_depth"):
            out[f"{s}/{key}"] = float(sum(getattr(r, key) for r in self.replicas))
        return out


class _ReplicaFailure(Exception):
    """Internal: a send failed because the replica failed (carries the Monarch error)."""

    def __init__(self, replica: Replica, cause: BaseException):
        super().__init__(f"{replica.name}: {type(cause).__name__}: {_first_line(cause)}")
        self.cause = cause


def _first_line(exc: BaseException) -> str:
    """A one-line description; for an endpoint's exception, the original exception, not Monarch's wrapper."""
    original = getattr(exc, "exception", None)
    if isinstance(exc, ActorError) and isinstance(original, BaseException):
        return f"{type(original).__name__}: {_first_line(original)}"
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class Service:
    """Replicas of one actor class, with routing, sessions, health checks and restarts (module doc)."""

    def __init__(self, cfg: ServiceConfig, actor_def: type, actor_args: Sequence[Any] = (),
                 actor_kwargs: dict[str, Any] | None = None):
        self.cfg = cfg
        self.actor_def = actor_def
        self.actor_args = tuple(actor_args)
        self.actor_kwargs = dict(actor_kwargs or {})
        self.replicas = [Replica(i, f"{cfg.name}_r{i}") for i in range(cfg.num_replicas)]
        self.retried_requests = 0
        self._healthy: list[Replica] = []
        self._router = build_router(cfg.router)
        self._healthy_event = asyncio.Event()
        self._session_var: ContextVar[str | None] = ContextVar(f"forge_session_{cfg.name}", default=None)
        self._sessions: dict[str, tuple[Replica, int] | None] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: contextvars.Context | None = None
        self.interface = ServiceInterface(self, endpoint_names(actor_def))

    # ---- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Launch every replica (concurrently); if any fails, stop the others and raise."""
        self._loop = asyncio.get_running_loop()
        # Background work (restarts, checks) runs in the controller's context as of start(): Monarch calls
        # the fault hook inside its root client actor's context, where spawning meshes fails.
        self._context = contextvars.copy_context()
        results = await asyncio.gather(*(self._launch(r) for r in self.replicas), return_exceptions=True)
        failed = [(r, e) for r, e in zip(self.replicas, results) if isinstance(e, BaseException)]
        add_fault_listener(self._on_mesh_failure)
        if failed:
            await self.shutdown()
            replica, err = failed[0]
            raise RuntimeError(
                f"service {self.cfg.name!r}: replica {replica.name} failed to start: "
                f"{type(err).__name__}: {_first_line(err)}") from err
        self._spawn(self._health_loop())

    async def _launch(self, replica: Replica) -> None:
        placed = self.actor_def.options(procs=self.cfg.procs, hosts=self.cfg.hosts,
                                        with_gpus=self.cfg.with_gpus, mesh_name=replica.name)
        replica.state = ReplicaState.STARTING
        actor = await asyncio.wait_for(placed.launch(*self.actor_args, **self.actor_kwargs),
                                       self.cfg.start_timeout_s)
        if self._closed:
            await _stop_actor(actor)
            return
        replica.attach(actor, self.cfg.procs)
        replica.pids = await self._ping(replica)
        self._set_state(replica, ReplicaState.HEALTHY)

    async def shutdown(self) -> None:
        """Stop health checks, restarts and every replica's processes; later calls raise."""
        if self._closed:
            return
        self._closed = True
        remove_fault_listener(self._on_mesh_failure)
        self._healthy = []
        self._healthy_event.set()  # wake waiters: they see the service closed and raise
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for replica in self.replicas:
            actor, replica.actor = replica.actor, None
            replica.state = ReplicaState.STOPPED
            if actor is not None:
                await _stop_actor(actor)

    stop = shutdown  # the seeds' name

    def _spawn(self, coro: Any) -> asyncio.Task:
        context = self._context.copy() if self._context is not None else None
        task = asyncio.get_running_loop().create_task(coro, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _set_state(self, replica: Replica, state: ReplicaState) -> None:
        replica.state = state
        self._healthy = [r for r in self.replicas if r.healthy]  # a new list: routers index it lock-free
        if self._healthy:
            self._healthy_event.set()
        else:
            self._healthy_event.clear()

    # ---- requests ------------------------------------------------------------------------------------
    async def route(self, name: str, args: tuple, kwargs: dict) -> Any:
        """Send one request to one healthy replica; re-send on replica failure (module doc)."""
        sid = self._session_var.get()
        attempts = 0
        while True:
            if sid is not None:
                replica = await self._session_replica(sid, name)
            elif self._healthy:
                replica = self._router.pick(self._healthy)
            else:
                replica = self._router.pick(await self._wait_healthy(name))
            attempts += 1
            try:
                return await self._call(replica, name, args, kwargs)
            except _ReplicaFailure as failure:
                if attempts >= self.cfg.max_attempts:
                    raise ReplicaFailedError(
                        f"service {self.cfg.name!r}: {name}() was sent {attempts} times and every replica it "
                        f"reached failed (last: {failure}); raise max_attempts or check the endpoint") \
                        from failure.cause
                self.retried_requests += 1

    async def fanout(self, name: str, args: tuple, kwargs: dict) -> list[Any]:
        """Call every healthy replica; results of those that answered, in replica order.

        An application exception from any replica is raised (after all calls finished). A replica that
        fails during the fanout is left out (it is restarted); if all fail, `ReplicaFailedError`.
        """
        targets = self._healthy or await self._wait_healthy(name)
        results = await asyncio.gather(*(self._call(r, name, args, kwargs) for r in targets),
                                       return_exceptions=True)
        values, failures = [], []
        for res in results:
            if isinstance(res, _ReplicaFailure):
                failures.append(res)
            elif isinstance(res, BaseException):
                raise res
            else:
                values.append(res)
        if failures and not values:
            raise ReplicaFailedError(
                f"service {self.cfg.name!r}: fanout of {name}() failed on every replica: "
                + "; ".join(str(f) for f in failures)) from failures[0].cause
        return values

    async def _call(self, replica: Replica, name: str, args: tuple, kwargs: dict) -> Any:
        generation = replica.generation
        ep = replica.endpoint(name)
        replica.in_flight += 1
        replica.requests += 1
        started = time.perf_counter()
        try:
            if replica.procs == 1:
                result = await ep.call_one(*args, **kwargs)
            else:  # SPMD replica: every rank takes part, rank 0 answers
                result = next(iter((await ep.call(*args, **kwargs)).values()))
        except ActorError as e:
            replica.errors += 1
            raise_remote(e)
        except Exception as e:
            if not is_replica_failure(e):
                raise
            replica.failures += 1
            self._on_failure(replica, generation, f"{name}() failed: {type(e).__name__}: {_first_line(e)}")
            raise _ReplicaFailure(replica, e) from e
        finally:
            replica.in_flight -= 1
        replica.record(started)
        return result

    async def _wait_healthy(self, name: str) -> list[Replica]:
        """Wait up to `unavailable_timeout_s` for a healthy replica; raise naming the service and why."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.unavailable_timeout_s
        while not self._healthy:
            if self._closed:
                raise ServiceUnavailableError(f"service {self.cfg.name!r} is shut down; {name}() not sent")
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._healthy_event.wait(), remaining)
            except TimeoutError:
                states = "; ".join(
                    f"{r.name}: {r.state.value}"
                    + (f" (last failure: {r.last_failure})" if r.last_failure else "")
                    for r in self.replicas)
                raise ServiceUnavailableError(
                    f"service {self.cfg.name!r}: no healthy replica within "
                    f"{self.cfg.unavailable_timeout_s:g} s for {name}(); replicas: {states}") from None
        return self._healthy

    # ---- sessions ------------------------------------------------------------------------------------
    async def start_session(self) -> str:
        """Open a sticky session and make it current in this task's context; returns its id."""
        sid = uuid.uuid4().hex
        self._sessions[sid] = None
        self._session_var.set(sid)
        return sid

    async def terminate_session(self, sid: str) -> None:
        """Close session `sid` (and leave it if it is the current one)."""
        if sid not in self._sessions:
            raise KeyError(f"service {self.cfg.name!r}: no active session {sid!r}")
        del self._sessions[sid]
        if self._session_var.get() == sid:
            self._session_var.set(None)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[str]:
        """Every `route()` in this block (in this task) goes to the same replica while it stays healthy."""
        sid = uuid.uuid4().hex
        self._sessions[sid] = None
        token = self._session_var.set(sid)
        try:
            yield sid
        finally:
            self._session_var.reset(token)
            self._sessions.pop(sid, None)

    async def _session_replica(self, sid: str, name: str) -> Replica:
        if sid not in self._sessions:
            raise KeyError(f"service {self.cfg.name!r}: session {sid!r} was terminated; {name}() not sent")
        bound = self._sessions[sid]
        if bound is not None and bound[0].healthy and bound[0].generation == bound[1]:
            return bound[0]
        # First request of the session, or its replica failed: bind to a healthy one (state is lost).
        replica = self._router.pick(self._healthy or await self._wait_healthy(name))
        self._sessions[sid] = (replica, replica.generation)
        return replica

    # ---- health and restarts -------------------------------------------------------------------------
    async def _ping(self, replica: Replica) -> tuple[int, ...]:
        values = await replica.actor._forge_ping.call()
        return tuple(int(v) for _, v in values.items())

    async def _health_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.cfg.health_interval_s)
            await asyncio.gather(*(self._check(r) for r in self.replicas if r.healthy))

    async def _check(self, replica: Replica) -> None:
        generation = replica.generation
        try:
            replica.pids = await asyncio.wait_for(self._ping(replica), self.cfg.health_timeout_s)
        except TimeoutError:
            self._on_failure(replica, generation,
                             f"no answer to the health ping within {self.cfg.health_timeout_s:g} s")
        except Exception as e:  # noqa: BLE001 - the ping cannot raise: any error means the replica is gone
            self._on_failure(replica, generation, f"health ping failed: {type(e).__name__}: {_first_line(e)}")

    def _on_mesh_failure(self, failure: Any) -> None:
        """Fault-hook listener (any thread): a failed mesh named `<replica>-<id>` gets a health check now.

        A check rather than marking it unhealthy outright: the failure may concern an earlier incarnation
        of the replica (names are stable); the ping tells whether the current one is affected.
        """
        mesh_name = str(getattr(failure, "mesh_name", "") or "")
        for replica in self.replicas:
            if mesh_name.startswith(replica.name + "-"):
                self._loop.call_soon_threadsafe(self._check_soon, replica, context=self._context.copy())

    def _check_soon(self, replica: Replica) -> None:
        if replica.healthy and not self._closed:
            self._spawn(self._check(replica))

    def _on_failure(self, replica: Replica, generation: int, reason: str) -> None:
        """Mark the replica unhealthy (once per incarnation) and restart it in the background."""
        if self._closed or replica.generation != generation or not replica.healthy:
            return
        logger.warning("service %s: replica %s unhealthy: %s", self.cfg.name, replica.name, reason)
        replica.last_failure = reason
        self._set_state(replica, ReplicaState.UNHEALTHY)
        self._spawn(self._restart(replica))

    async def _restart(self, replica: Replica) -> None:
        """Stop the failed incarnation (its pending calls fail and are re-sent) and launch a new one."""
        old, replica.actor = replica.actor, None
        if old is not None:
            await _stop_actor(old)
        delay = self.cfg.restart_backoff_s
        while not self._closed:
            try:
                await self._launch(replica)
                replica.restarts += 1
                logger.warning("service %s: replica %s restarted (restart #%d)", self.cfg.name, replica.name,
                               replica.restarts)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any launch failure is retried with backoff
                replica.state = ReplicaState.UNHEALTHY
                replica.last_failure = f"restart failed: {_first_line(e)}"
                logger.warning("service %s: %s %s", self.cfg.name, replica.name, replica.last_failure)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 30.0)

    # ---- metrics -------------------------------------------------------------------------------------
    def get_metrics(self) -> ServiceMetrics:
        return ServiceMetrics(
            service=self.cfg.name, replicas=[r.metrics() for r in self.replicas],
            healthy_replicas=len(self._healthy), retried_requests=self.retried_requests,
            active_sessions=len(self._sessions))


async def _stop_actor(actor: Any) -> None:
    """Stop the meshes of an actor launched by ForgeActor.launch; errors of a dead mesh are ignored."""
    from forge.controller.actor import ForgeActor

    try:
        await ForgeActor.shutdown(actor)
    except Exception as e:  # noqa: BLE001 - a dead mesh may refuse a clean stop
        logger.info("stopping a replica's meshes: %s", e)
