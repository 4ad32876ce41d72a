"""Process-mesh provisioning: spawn Monarch process meshes with their distributed env and GPU placement.

Every process of a forge mesh starts with `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`,
`MASTER_ADDR`, `MASTER_PORT` (a free port per mesh), `FORGE_MESH_NAME` and the controller's `sys.path` as
`PYTHONPATH` in its environment, set through Monarch's per-rank bootstrap command, i.e. before any actor
code (including `setup()`) runs; an engine can therefore call `torch.distributed.init_process_group(
"gloo" | "nccl")` with `init_method="env://"`.

With `with_gpus=True` each process gets distinct devices through `CUDA_VISIBLE_DEVICES`, from the
controller-side `GpuAllocator`, which refuses clearly when there are not enough free devices.

When a mesh is stopped, any process still carrying its `FORGE_MESH_ID` (unique per spawn, inherited by
every descendant) is SIGKILLed: an engine's own subprocesses (vLLM's EngineCore, workers) would otherwise be
orphaned when their actor process dies. (If the controller itself is SIGKILLed this cleanup cannot run;
Monarch's processes die with it through their parent-death signal, an engine's subprocesses need their own.)

Scope: one host (the controller's). `hosts > 1` needs a multi-host launcher (a Monarch job / SLURM
allocation) that this provisioner does not have; it is refused with an error saying so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from monarch.actor import ProcMesh, default_bootstrap_cmd, this_host

from forge.store.shm import default_root as store_root

logger = logging.getLogger(__name__)

# Address the processes of a single-host mesh rendezvous on.
LOCAL_MASTER_ADDR = "127.0.0.1"


class PlacementError(RuntimeError):
    """A mesh cannot be placed as requested (not enough GPUs, unsupported host count, bad sizes)."""


def controller_pythonpath() -> str:
    """PYTHONPATH that lets the mesh's processes import what the controller imports.

    Actor classes are sent by reference (module + name); a class from a directory the controller added
    to `sys.path` at run time (a script's folder, pytest's rootdir) would otherwise fail to unpickle in the
    child with ModuleNotFoundError.
    """
    entries = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    entries += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    seen: list[str] = []
    for entry in entries:
        if entry and os.path.isdir(entry) and entry not in seen:
            seen.append(entry)
    return os.pathsep.join(seen)


def free_port() -> int:
    """A TCP port that is free right now on this host (bound to port 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCAL_MASTER_ADDR, 0))
        return s.getsockname()[1]


def _visible_devices(device_count: int | None) -> list[str]:
    """The device ids this controller may hand out: its own CUDA_VISIBLE_DEVICES, else 0..count-1."""
    if device_count is None:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is not None:
            return [d.strip() for d in env.split(",") if d.strip()]
        import torch

        device_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [str(i) for i in range(device_count)]


class GpuAllocator:
    """Hands out distinct GPU ids to meshes and takes them back when a mesh stops.

    `device_count` overrides detection (tests fake a GPU count with it); by default the controller's
    `CUDA_VISIBLE_DEVICES` or `torch.cuda.device_count()` decides.
    """

    def __init__(self, device_count: int | None = None):
        self._devices = _visible_devices(device_count)
        self._owner: dict[str, str] = {}  # device id -> mesh name holding it
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return len(self._devices)

    def free(self) -> list[str]:
        with self._lock:
            return [d for d in self._devices if d not in self._owner]

    def allocate(self, owner: str, n: int) -> list[str]:
        """Reserve `n` distinct devices for mesh `owner`; raise `PlacementError` if fewer are free."""
        if n < 1:
            raise PlacementError(f"mesh '{owner}': asked for {n} GPUs; ask for at least 1")
        with self._lock:
            free = [d for d in self._devices if d not in self._owner]
            if len(free) < n:
                held = {}
                for dev, who in self._owner.items():
                    held.setdefault(who, []).append(dev)
                raise PlacementError(
                    f"mesh '{owner}' needs {n} GPU(s) (one per process) but only {len(free)} of "
                    f"{len(self._devices)} are free (held: {held or 'none'}); lower procs/num_replicas, "
                    f"stop other meshes, or run with with_gpus=False"
                )
            got = free[:n]
            for dev in got:
                self._owner[dev] = owner
            return got

    def release(self, owner: str) -> None:
        with self._lock:
            for dev in [d for d, who in self._owner.items() if who == owner]:
                del self._owner[dev]


@dataclass
class MeshHandle:
    """A spawned process mesh plus what the provisioner reserved for it."""

    name: str  # stable mesh name (a restarted replica keeps its name)
    proc_mesh: ProcMesh  # the Monarch process mesh
    procs: int  # processes in the mesh
    master_port: int  # the port rank 0 rendezvous on
    gpus: list[str] = field(default_factory=list)  # CUDA device ids, one per process (empty on CPU)
    mesh_id: str = ""  # unique per spawn (FORGE_MESH_ID in every process of the mesh and their children)
    stopped: bool = False


class Provisioner:
    """Spawns and stops the process meshes of one controller and keeps track of them."""

    def __init__(self, gpu_allocator: GpuAllocator | None = None):
        self._gpus = gpu_allocator
        self._meshes: dict[int, MeshHandle] = {}
        self._counter = 0

    @property
    def gpus(self) -> GpuAllocator:
        if self._gpus is None:
            self._gpus = GpuAllocator()
        return self._gpus

    def _unique_name(self, base: str) -> str:
        self._counter += 1
        return f"{base}_{self._counter}"

    def spawn(self, *, procs: int = 1, hosts: int | None = None, with_gpus: bool = False,
              mesh_name: str | None = None, base_name: str = "mesh") -> MeshHandle:
        """Spawn a process mesh of `procs` processes on this host, each with its rank env (see module doc)."""
        if not isinstance(procs, int) or procs < 1:
            raise PlacementError(f"procs must be an int >= 1, got {procs!r}")
        if hosts not in (None, 1):
            raise PlacementError(
                f"hosts={hosts!r}: this provisioner places meshes on the controller's host only; use "
                f"hosts=None (or 1) and procs=<processes>, or launch forge under a multi-host Monarch job"
            )
        name = mesh_name or self._unique_name(base_name)
        gpus = self.gpus.allocate(name, procs) if with_gpus else []
        port = free_port()
        mesh_id = uuid.uuid4().hex
        # Every process of one run shares one weight store: fix its location (per run, never a shared default)
        # in the controller before the first spawn and hand it to the children explicitly.
        base_cmd = default_bootstrap_cmd().with_env({"PYTHONPATH": controller_pythonpath(),
                                                     "FORGE_STORE_DIR": store_root()})

        def per_rank(point: Any):
            rank = int(point["procs"])
            env = {
                "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(procs),
                "LOCAL_WORLD_SIZE": str(procs), "MASTER_ADDR": LOCAL_MASTER_ADDR, "MASTER_PORT": str(port),
                "FORGE_MESH_NAME": name, "FORGE_MESH_ID": mesh_id,
            }
            if with_gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[rank]
            return base_cmd.with_env(env)

        try:
            pm = this_host().spawn_procs(per_host={"procs": procs}, name=name, bootstrap_command=per_rank)
        except Exception:
            if with_gpus:
                self.gpus.release(name)
            raise
        handle = MeshHandle(name=name, proc_mesh=pm, procs=procs, master_port=port, gpus=gpus,
                            mesh_id=mesh_id)
        self._meshes[id(handle)] = handle
        return handle

    async def stop(self, handle: MeshHandle, timeout_s: float = 30.0) -> None:
        """Stop the mesh's processes (errors from an already-dead mesh are ignored) and free its GPUs."""
        if handle.stopped:
            return
        handle.stopped = True
        self._meshes.pop(id(handle), None)
        # Snapshot the mesh's whole process tree first: subprocesses its actors started (vLLM's EngineCore and
        # workers) do not carry the mesh's environment marker, and once their parent is stopped they are
        # reparented out of reach.
        tree = mesh_process_tree(handle.mesh_id)
        try:
            await asyncio.wait_for(_await(handle.proc_mesh.stop()), timeout_s)
        except Exception as e:  # noqa: BLE001 - a crashed mesh may refuse a clean stop; its processes are gone
            logger.info("stopping mesh %s: %s", handle.name, e)
        finally:
            killed = sorted(set(reap_mesh_processes(handle.mesh_id) + _kill_survivors(tree)))
            if killed:
                logger.info("mesh %s: killed %d leftover process(es) %s", handle.name, len(killed), killed)
            if handle.gpus:
                self.gpus.release(handle.name)

    async def stop_all(self) -> None:
        for handle in list(self._meshes.values()):
            await self.stop(handle)

    def live_meshes(self) -> list[MeshHandle]:
        return list(self._meshes.values())


def reap_mesh_processes(mesh_id: str) -> list[int]:
    """SIGKILL every process whose environment holds FORGE_MESH_ID=<mesh_id>; returns their pids."""
    killed = []
    for pid in _marked_pids(mesh_id):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            continue
    return killed


def mesh_process_tree(mesh_id: str) -> list[tuple[int, float]]:
    """(pid, start time) of every process marked FORGE_MESH_ID=<mesh_id> and of all their descendants."""
    import psutil

    marked = set(_marked_pids(mesh_id))
    out = {}
    for pid in marked:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                out[p.pid] = p.create_time()
        except psutil.NoSuchProcess:
            continue
    return sorted(out.items())


def _kill_survivors(tree: list[tuple[int, float]]) -> list[int]:
    """SIGKILL the processes of ``tree`` still alive (same pid *and* start time: never a recycled pid)."""
    import psutil

    killed = []
    for pid, created in tree:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                killed.append(pid)
        except psutil.NoSuchProcess:
            continue
    return killed


def _marked_pids(mesh_id: str) -> list[int]:
    if not mesh_id:
        return []
    needle = f"FORGE_MESH_ID={mesh_id}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue  # gone already, or not ours to read
    return pids


async def _await(fut: Any) -> Any:
    return await fut


_default: Provisioner | None = None


def get_provisioner() -> Provisioner:
    """The controller-wide provisioner (created on first use)."""
    global _default
    if _default is None:
        _default = Provisioner()
    return _default
