"""The user-facing handle of a service: `svc.<endpoint>.route/fanout`, sessions, metrics, shutdown.

```python
svc = await Worker.options(num_replicas=2).as_service()
y = await svc.work.route(x)                 # one healthy replica
ys = await svc.work.fanout(x)               # every healthy replica, list of results
ys = await svc.call_all("work", x)          # the same, by name
async with svc.session():                   # sticky: all routes in this block hit one replica
    await svc.work.route(1); await svc.work.route(2)
svc.get_metrics(); await svc.shutdown()
```

The interface lives in the controller process (the service is not an actor); it cannot be pickled into
another actor. Interface methods (`session`, `shutdown`, ...) take precedence over endpoints of the same
name; such an endpoint is still reachable as `svc.endpoint("shutdown")`.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from monarch._src.actor.endpoint import EndpointProperty

if TYPE_CHECKING:
    from forge.controller.service.service import Service, ServiceMetrics


def endpoint_names(actor_cls: type) -> list[str]:
    """Names of the Monarch endpoints (plain and concurrent) of an actor class, inherited ones included."""
    return sorted(n for n in dir(actor_cls)
                  if isinstance(inspect.getattr_static(actor_cls, n, None), EndpointProperty))


class ServiceEndpoint:
    """The service adverbs of one endpoint."""

    __slots__ = ("_service", "name")

    def __init__(self, service: Service, name: str):
        self._service = service
        self.name = name

    def route(self, *args: Any, **kwargs: Any):
        """Send to one healthy replica (the session's inside `svc.session()`); returns its result."""
        return self._service.route(self.name, args, kwargs)

    def fanout(self, *args: Any, **kwargs: Any):
        """Send to every healthy replica; returns the list of results."""
        return self._service.fanout(self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"ServiceEndpoint({self._service.cfg.name}.{self.name})"


class ServiceInterface:
    """Handle returned by `ForgeActor.as_service()`."""

    def __init__(self, service: Service, names: list[str]):
        self._service = service
        self._endpoints = {n: ServiceEndpoint(service, n) for n in names}

    def __getattr__(self, name: str) -> ServiceEndpoint:
        endpoints = self.__dict__.get("_endpoints", {})
        if name in endpoints:
            return endpoints[name]
        raise AttributeError(
            f"service {self.__dict__['_service'].cfg.name!r} has no endpoint {name!r}; "
            f"endpoints: {sorted(n for n in endpoints if not n.startswith('_'))}")

    def endpoint(self, name: str) -> ServiceEndpoint:
        return self.__getattr__(name)

    @property
    def service(self) -> Service:
        """The underlying `Service` (replicas, config) for inspection."""
        return self._service

    @property
    def name(self) -> str:
        return self._service.cfg.name

    async def call_all(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call endpoint `name` on every healthy replica; the list of results."""
        return await self.endpoint(name).fanout(*args, **kwargs)

    def session(self) -> AbstractAsyncContextManager[str]:
        """`async with svc.session():` — routes in this block (this task) stick to one replica."""
        return self._service.session()

    async def start_session(self) -> str:
        return await self._service.start_session()

    async def terminate_session(self, sess_id: str) -> None:
        await self._service.terminate_session(sess_id)

    def get_metrics(self) -> ServiceMetrics:
        return self._service.get_metrics()

    async def shutdown(self) -> None:
        await self._service.shutdown()

    async def stop(self) -> None:
        await self._service.shutdown()

    def __reduce__(self):
        raise TypeError(
            f"service {self._service.cfg.name!r}: a ServiceInterface lives in the controller and cannot be "
            f"sent to another actor; pass the data it returns, or launch the actor with as_actor()")

    def __repr__(self) -> str:
        m = self._service.get_metrics()
        return f"ServiceInterface({m.service}, {m.healthy_replicas}/{len(m.replicas)} healthy)"
