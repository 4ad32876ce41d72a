"""Services: replicated ForgeActors behind route / fanout / sessions, with health checks and restarts."""

from forge.controller.faults import ReplicaFailedError, ServiceUnavailableError
from forge.controller.service.interface import ServiceEndpoint, ServiceInterface
from forge.controller.service.replica import Replica, ReplicaMetrics, ReplicaState
from forge.controller.service.router import LeastLoadedRouter, RoundRobinRouter
from forge.controller.service.service import Service, ServiceConfig, ServiceMetrics

__all__ = [
    "LeastLoadedRouter", "Replica", "ReplicaFailedError", "ReplicaMetrics", "ReplicaState", "RoundRobinRouter",
    "Service", "ServiceConfig", "ServiceEndpoint", "ServiceInterface", "ServiceMetrics", "ServiceUnavailableError",
]
