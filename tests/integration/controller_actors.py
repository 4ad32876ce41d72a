"""Small ForgeActors used by the controller/service integration tests (real Monarch processes).

Pytest imports test modules from a path the actor processes do not have on `sys.path`, so this module
asks cloudpickle to send its classes by value.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import cloudpickle
from monarch.actor import concurrent_endpoint, endpoint

from forge.controller import ForgeActor

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Echo(ForgeActor):
    """Records every request it served; endpoints for crashing, freezing and failing on purpose."""

    def __init__(self, tag: str = "echo"):
        self.tag = tag
        self.seen: list[int] = []
        self.count = 0
        self.setup_calls = 0

    @endpoint
    async def setup(self) -> None:
        self.setup_calls += 1

    @concurrent_endpoint
    async def work(self, i: int, delay: float = 0.0) -> dict:
        await asyncio.sleep(delay)
        self.seen.append(i)
        return {"i": i, "square": i * i, "pid": os.getpid(), "replica": os.environ["FORGE_MESH_NAME"]}

    @endpoint
    async def incr(self) -> int:
        self.count += 1
        return self.count

    @endpoint
    async def whoami(self) -> dict:
        return {"pid": os.getpid(), "replica": os.environ["FORGE_MESH_NAME"], "tag": self.tag,
                "setup_calls": self.setup_calls}

    @endpoint
    async def processed(self) -> list[int]:
        return list(self.seen)

    @endpoint
    async def fail(self, msg: str) -> None:
        _raise_value_error_deep_inside(msg)

    @concurrent_endpoint
    async def crash(self, code: int = 13) -> None:
        os._exit(code)

    @endpoint
    async def spawn_child(self, clean_env: bool = False) -> int:
        """Start a detached `sleep` (own session, like an engine's worker); returns its pid. ``clean_env``: without
        the mesh's FORGE_MESH_* marker, as vLLM starts its EngineCore."""
        import subprocess

        env = {k: v for k, v in os.environ.items() if not (clean_env and k.startswith("FORGE_MESH_"))}
        return subprocess.Popen(["sleep", "600"], start_new_session=True, env=env).pid  # noqa: ASYNC220

    @concurrent_endpoint
    async def freeze(self, seconds: float) -> None:
        time.sleep(seconds)  # noqa: ASYNC251 - on purpose: blocks the loop, so the replica stops answering pings


def _raise_value_error_deep_inside(msg: str) -> None:
    raise ValueError(f"bad request: {msg}")


class GlooWorker(ForgeActor):
    """Joins a gloo process group in setup() from the env the runtime gave it (procs > 1)."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    @endpoint
    async def setup(self) -> None:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method="env://")

    @endpoint
    async def env(self) -> dict:
        keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES")
        return {k: os.environ.get(k) for k in keys}

    @endpoint
    async def allreduce(self, x: float) -> float:
        """sum over ranks r of x * scale * (r + 1)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([x * self.scale * (dist.get_rank() + 1)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())


class SetupFailsIfMarker(ForgeActor):
    """setup() raises while a marker file exists: makes restarts fail on demand."""

    def __init__(self, marker: str):
        self.marker = marker

    @endpoint
    async def setup(self) -> None:
        if os.path.exists(self.marker):
            raise RuntimeError(f"setup refused: marker {self.marker} exists")

    @endpoint
    async def pid(self) -> int:
        return os.getpid()

    @concurrent_endpoint
    async def crash(self) -> None:
        os._exit(3)


# ---- helpers for the tests ----------------------------------------------------------------------------
async def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Poll `predicate()` until true; fail the test saying `what` did not happen within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}")
        await asyncio.sleep(poll_s)


def processes_with_mesh_prefix(prefix: str) -> list[int]:
    """Live (non-zombie) processes whose FORGE_MESH_NAME starts with `prefix` (i.e. that forge spawned)."""
    found = []
    needle = f"FORGE_MESH_NAME={prefix}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if any(var.startswith(needle) for var in env.split(b"\0")):
            found.append(int(entry))
    return found
