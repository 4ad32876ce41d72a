"""The data-parallel world of a training engine: process group, device, device mesh, row sharding.

The engine runs in every process of its group, launched by Monarch (``ForgeActor`` with ``procs=N`` sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``), by ``torchrun``, or as a plain single
process. With no ``WORLD_SIZE`` in the environment a one-process group is created on an in-memory store, so FSDP2
runs (and is tested) the same way at world size 1. gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh


@dataclass
class World:
    """This process's place in the data-parallel group."""

    rank: int
    world_size: int
    device: torch.device
    mesh: DeviceMesh
    owns_process_group: bool  # True when this engine created the default group (and destroys it at cleanup)


def resolve_device(spec: str) -> torch.device:
    """"auto" → ``cuda:LOCAL_RANK`` when CUDA is available, else cpu; anything else is taken literally."""
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def init_world(device_spec: str = "auto") -> World:
    """Join (or create) the default process group and build a 1-D data-parallel mesh over it."""
    device = resolve_device(device_spec)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
            for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
                if var not in os.environ:
                    raise RuntimeError(
                        f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {var} is not set: launch with torchrun or a "
                        "ForgeActor with procs>1, which set RANK, MASTER_ADDR and MASTER_PORT"
                    )
            dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        else:
            # One process: an in-memory store needs no free port, so tests can build many engines.
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        owns = True
    world_size = dist.get_world_size()
    mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("dp",))
    return World(rank=dist.get_rank(), world_size=world_size, device=device, mesh=mesh, owns_process_group=owns)


def local_rows(num_rows: int, world: World) -> slice:
    """The contiguous block of batch rows this rank trains on: rows [r·B/W, (r+1)·B/W).

    Every rank receives the whole batch (Monarch's ``.call`` broadcasts it) and keeps its own block, so the
    controller never needs to know the world size. B must be divisible by W: every rank must run the same number
    of forward/backward passes or FSDP's collectives would deadlock.
    """
    if num_rows % world.world_size != 0:
        raise ValueError(
            f"batch has {num_rows} rows, not divisible by the trainer's {world.world_size} data-parallel ranks; "
            f"send a multiple of {world.world_size} rows"
        )
    per = num_rows // world.world_size
    return slice(world.rank * per, (world.rank + 1) * per)


def all_reduce(values: list[float], world: World, op: str = "sum") -> list[float]:
    """Reduce a few float64 scalars over ranks ("sum", "min" or "max"); a no-op at world size 1."""
    if world.world_size == 1 or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return t.tolist()
