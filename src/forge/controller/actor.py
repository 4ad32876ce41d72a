"""`ForgeActor`: a Monarch `Actor` that knows its own placement and how to launch itself.

```python
class Counter(ForgeActor):
    def __init__(self, start=0): self.n = start          # cheap: store config only
    @endpoint
    async def setup(self): ...                            # heavy init, run on every rank after spawn
    @endpoint
    async def incr(self, k=1): self.n += k; return self.n

c = await Counter.options(procs=1).as_actor(start=5)      # an actor mesh handle
await c.incr.call_one(2)                                  # raw Monarch adverbs
svc = await Counter.options(num_replicas=2).as_service(start=5)
await svc.incr.route(2)                                   # service adverbs (forge.controller.service)
await Counter.shutdown(c); await Counter.shutdown(svc)
```

Placement lives in class attributes set by `options()` (which returns a configured subclass), never in
constructor arguments. Every process of the mesh gets `RANK`/`LOCAL_RANK`/`WORLD_SIZE`/`MASTER_ADDR`/
`MASTER_PORT` before `setup()` runs (see `provisioner.py`), so an engine can `init_process_group` there.

All endpoints of a ForgeActor must be `async` (Monarch cannot mix sync and async endpoints in one actor;
the built-in `setup` and `_forge_ping` are async). Endpoints that must overlap use
`monarch.actor.concurrent_endpoint`.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, ClassVar

from monarch._src.actor.endpoint import EndpointProperty
from monarch.actor import Actor, concurrent_endpoint, endpoint

from forge.controller.faults import install_fault_handling
from forge.controller.provisioner import MeshHandle, PlacementError, get_provisioner

# options() keywords that are placement, not service configuration.
_PLACEMENT = ("procs", "hosts", "with_gpus", "num_replicas", "mesh_name")


class ForgeActor(Actor):
    """Base class of every forge actor: placement attributes plus `options/as_actor/as_service/shutdown`."""

    procs: int = 1  # processes per mesh (per replica for a service)
    hosts: int | None = None  # hosts per mesh; None = the controller's host
    with_gpus: bool = False  # give each process its own GPU (CUDA_VISIBLE_DEVICES)
    num_replicas: int = 1  # replicas when launched as a service
    mesh_name: str | None = None  # name of the process mesh (replicas append _r<i>)
    _forge_service_options: ClassVar[dict[str, Any]] = {}  # extra options() kwargs: ServiceConfig fields
    _forge_is_configured: bool = False  # True on the subclasses that options() makes

    # ---- endpoints every ForgeActor has ---------------------------------------------------------------
    @endpoint
    async def setup(self) -> None:
        """Heavy initialisation (engine start, weight load); run on every rank after spawn. Default: none."""

    @concurrent_endpoint
    async def _forge_ping(self) -> int:
        """Health probe used by services; concurrent so a long-running request does not delay it."""
        return os.getpid()

    # ---- placement -----------------------------------------------------------------------------------
    @classmethod
    def options(cls, *, procs: int = 1, hosts: int | None = None, with_gpus: bool = False,
                num_replicas: int = 1, mesh_name: str | None = None, **kwargs: Any) -> type[ForgeActor]:
        """Return a subclass of `cls` with this placement; extra kwargs are `ServiceConfig` fields."""
        from forge.controller.service.service import ServiceConfig

        if not isinstance(procs, int) or procs < 1:
            raise ValueError(f"{cls.__name__}.options: procs must be an int >= 1, got {procs!r}")
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(
                f"{cls.__name__}.options: num_replicas must be an int >= 1, got {num_replicas!r}")
        ServiceConfig.check_fields(kwargs, where=f"{cls.__name__}.options")
        ServiceConfig(name=mesh_name or cls.__name__.lower(), num_replicas=num_replicas, procs=procs,
                      hosts=hosts, with_gpus=with_gpus, **kwargs)  # validates the values now, not at launch
        attrs = {
            "procs": procs, "hosts": hosts, "with_gpus": with_gpus, "num_replicas": num_replicas,
            "mesh_name": mesh_name, "_forge_service_options": dict(kwargs), "_forge_is_configured": True,
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        }
        return type(cls.__name__, (cls,), attrs)

    @classmethod
    def _actor_class(cls) -> type[ForgeActor]:
        """The user's class (what the processes import), skipping the subclasses `options()` made."""
        klass = cls
        while klass.__dict__.get("_forge_is_configured", False):
            klass = klass.__mro__[1]
        return klass

    @classmethod
    def _placement(cls) -> dict[str, Any]:
        return {k: getattr(cls, k) for k in _PLACEMENT}

    # ---- launching -----------------------------------------------------------------------------------
    @classmethod
    async def launch(cls, *args: Any, **kwargs: Any) -> Any:
        """Spawn a process mesh of `cls.procs` processes, the actor on it, run `setup()` on every rank.

        Returns the Monarch actor mesh handle. Composite actors override this (spawning helper meshes)
        and register each extra mesh with `forge.controller.actor.register_mesh(handle, mesh)`.
        """
        install_fault_handling()
        actor_cls = cls._actor_class()
        _check_async_endpoints(actor_cls)
        mesh = get_provisioner().spawn(procs=cls.procs, hosts=cls.hosts, with_gpus=cls.with_gpus,
                                       mesh_name=cls.mesh_name, base_name=actor_cls.__name__.lower())
        try:
            actor = mesh.proc_mesh.spawn(mesh.name, actor_cls, *args, **kwargs)
            register_mesh(actor, mesh)
            await actor.setup.call()  # every rank; an exception in setup raises here
        except BaseException:
            await get_provisioner().stop(mesh)
            raise
        return actor

    @classmethod
    async def as_actor(cls, *args: Any, **kwargs: Any) -> Any:
        """Launch one actor (a mesh of `procs` processes); `await a.ep.call_one(...)` / `.call(...)` work."""
        if cls.num_replicas != 1:
            raise PlacementError(
                f"{cls.__name__}.as_actor: num_replicas={cls.num_replicas} asks for a service; "
                f"call as_service() or set num_replicas=1"
            )
        return await cls.launch(*args, **kwargs)

    @classmethod
    async def as_service(cls, *args: Any, **kwargs: Any) -> Any:
        """Launch `num_replicas` copies behind a `ServiceInterface` (route / fanout / session / ...)."""
        from forge.controller.service.service import Service, ServiceConfig

        install_fault_handling()
        cfg = ServiceConfig.from_actor_options(cls)
        service = Service(cfg, cls, args, kwargs)
        await service.start()
        return service.interface

    @classmethod
    async def shutdown(cls, actor_or_service: Any) -> None:
        """Stop an actor returned by `as_actor` (its process meshes) or a service (all its replicas)."""
        from forge.controller.service.interface import ServiceInterface

        if isinstance(actor_or_service, ServiceInterface):
            await actor_or_service.shutdown()
            return
        meshes = _MESHES.pop(id(actor_or_service), None)
        if meshes is None:
            raise ValueError(
                f"shutdown: {type(actor_or_service).__name__} was not launched by ForgeActor.as_actor/"
                f"as_service (or was already shut down)"
            )
        for mesh in reversed(meshes[1:]):
            await get_provisioner().stop(mesh)


def _check_async_endpoints(actor_cls: type) -> None:
    """Refuse sync endpoints up front: Monarch cannot mix them with the async `setup`/`_forge_ping`."""
    sync = [name for name in dir(actor_cls)
            if isinstance(prop := inspect.getattr_static(actor_cls, name, None), EndpointProperty)
            and not inspect.iscoroutinefunction(getattr(prop, "_method", None))]
    if sync:
        raise TypeError(
            f"{actor_cls.__name__}: endpoints {sync} are plain `def`; every endpoint of a ForgeActor must be "
            f"`async def` (Monarch cannot mix sync and async endpoints in one actor)")


# id(actor handle) -> [actor handle (kept alive so the id stays unique), mesh, mesh, ...]
_MESHES: dict[int, list[Any]] = {}


def register_mesh(actor: Any, mesh: MeshHandle) -> None:
    """Record that `mesh` belongs to `actor`, so `ForgeActor.shutdown(actor)` stops it."""
    _MESHES.setdefault(id(actor), [actor]).append(mesh)


def meshes_of(actor: Any) -> list[MeshHandle]:
    """The process meshes launched for `actor` (empty if none are registered)."""
    return list(_MESHES.get(id(actor), [None])[1:])
