"""forge's actor runtime on Monarch: `ForgeActor`, services, provisioning and fault handling.

    from forge.controller import ForgeActor
    from monarch.actor import endpoint

See `actor.py` (launching), `service/` (route / fanout / sessions / restarts), `provisioner.py` (process
meshes, rank env, GPU placement) and `faults.py` (Monarch's fault hook, error classification).
"""

from forge.controller.actor import ForgeActor, register_mesh
from forge.controller.faults import ReplicaFailedError, ServiceUnavailableError, install_fault_handling
from forge.controller.provisioner import GpuAllocator, PlacementError, Provisioner, get_provisioner
from forge.controller.service import (
    LeastLoadedRouter,
    RoundRobinRouter,
    Service,
    ServiceConfig,
    ServiceEndpoint,
    ServiceInterface,
    ServiceMetrics,
)

__all__ = [
    "ForgeActor", "GpuAllocator", "LeastLoadedRouter", "PlacementError", "Provisioner", "ReplicaFailedError",
    "RoundRobinRouter", "Service", "ServiceConfig", "ServiceEndpoint", "ServiceInterface", "ServiceMetrics",
    "ServiceUnavailableError", "get_provisioner", "install_fault_handling", "register_mesh",
]
