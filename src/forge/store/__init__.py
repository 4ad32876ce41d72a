"""forge.store: the weight store that carries policy weights from the trainer to the generators (issue 5).

TorchStore-style async API, usable from any process of a run (plain PyTorch; no Monarch needed on this path)::

    import forge.store as ws
    await ws.put(key, tensor_or_dtensor)           # a DTensor: every rank puts its own shard
    t = await ws.get(key, into=None)               # full tensor, or fill `into` (tensor / DTensor: its shard only)
    await ws.keys(prefix) ; await ws.delete(prefix)
    await ws.put_state_dict(state_dict, prefix)    # one safetensors part; every rank writes its shards in place
    sd = await ws.get_state_dict(prefix, into=None)
    await ws.commit(prefix)                        # every rank, after its puts; complete when all ranks committed
    ws.policy_prefix(version) == f"policy/v{version}"

Trainer side of a weight push (every FSDP rank, HF-named DTensors)::

    await ws.put_state_dict(hf_state_dict, ws.policy_prefix(version))
    await ws.commit(ws.policy_prefix(version))     # rank/world from torch.distributed; drops old versions

Generator side: ``folder = await ws.wait_complete(ws.policy_prefix(version))`` then vLLM reloads from ``folder``.

Where the store lives: ``$FORGE_STORE_DIR`` (set it — or call ``configure(...)`` — in the controller before
spawning processes; children inherit the environment), else ``/dev/shm/forge-store-<user>-<$FORGE_RUN_ID>``.
``$FORGE_STORE_KEEP_VERSIONS`` (default 2) complete policy versions are kept; the files of a dropped version
are recycled for the next put of the same size (writing into existing shared-memory pages is ~4x faster than
into fresh ones), unless a reader holds them (``reading(prefix)``).

Transports: same-host shared memory (this module, ``shm.py``); cross-host reads through Monarch ``RDMABuffer``
(``forge.store.rdma``, TCP fallback off InfiniBand), which copies a remote host's version into the local store.
"""

from __future__ import annotations

import asyncio
import os

import torch

from forge.store.shm import ShmStore, StoreConfig, default_root, policy_prefix

__all__ = [
    "ShmStore",
    "StoreConfig",
    "commit",
    "configure",
    "delete",
    "get",
    "get_state_dict",
    "get_store",
    "is_complete",
    "keys",
    "latest_version",
    "policy_prefix",
    "put",
    "put_state_dict",
    "reading",
    "versions",
    "wait_complete",
    "weights_path",
]

_STORE: ShmStore | None = None


def configure(root: str | None = None, *, run_id: str | None = None, keep_versions: int | None = None) -> StoreConfig:
    """Fix the store location (and versions kept) for this process *and the processes it spawns later*.

    Sets ``FORGE_STORE_DIR`` / ``FORGE_STORE_KEEP_VERSIONS`` in ``os.environ`` so that Monarch procs spawned
    afterwards, which inherit the environment, use the same store. Returns the resulting config.
    """
    global _STORE
    if root is None:
        os.environ.pop("FORGE_STORE_DIR", None)
        root = default_root(run_id)
    os.environ["FORGE_STORE_DIR"] = root
    if keep_versions is not None:
        os.environ["FORGE_STORE_KEEP_VERSIONS"] = str(keep_versions)
    _STORE = None
    return get_store().config


def get_store() -> ShmStore:
    """The process's store, resolved from the environment (re-resolved if ``FORGE_STORE_DIR`` changed)."""
    global _STORE
    root = default_root()
    keep = int(os.environ.get("FORGE_STORE_KEEP_VERSIONS", "2"))
    if _STORE is None or _STORE.config.root != root or _STORE.config.keep_versions != keep:
        _STORE = ShmStore(StoreConfig(root=root, keep_versions=keep))
    return _STORE


async def put(key: str, tensor: torch.Tensor) -> None:
    """Store ``tensor`` (or this rank's shard of a DTensor) under ``key``."""
    await asyncio.to_thread(get_store().put, key, tensor)


async def get(key: str, into: torch.Tensor | None = None) -> torch.Tensor:
    """The full tensor under ``key``; with ``into`` (tensor or DTensor), fill it in place and return it."""
    return await asyncio.to_thread(get_store().get, key, into)


async def keys(prefix: str = "") -> list[str]:
    """Stored keys starting with ``prefix``, sorted."""
    return await asyncio.to_thread(get_store().keys, prefix)


async def delete(prefix: str) -> int:
    """Delete the folder ``prefix`` (or one key); returns the number of keys deleted."""
    return await asyncio.to_thread(get_store().delete, prefix)


async def put_state_dict(state_dict: dict[str, torch.Tensor], prefix: str) -> None:
    """Store ``{name: tensor | DTensor}`` under ``prefix`` as one safetensors part (keys ``prefix/name``)."""
    await asyncio.to_thread(get_store().put_state_dict, state_dict, prefix)


async def get_state_dict(prefix: str, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """All tensors under ``prefix`` as ``{name: full tensor}``; with ``into``, fill those (DTensors: own shard)."""
    return await asyncio.to_thread(get_store().get_state_dict, prefix, into)


async def commit(prefix: str, *, rank: int | None = None, world_size: int | None = None) -> bool:
    """This rank is done putting under ``prefix``; True on the call that made it complete (and dropped old versions)."""
    return await asyncio.to_thread(get_store().commit, prefix, rank, world_size)


async def wait_complete(prefix: str, timeout: float = 60.0) -> str:
    """Wait until ``prefix`` is complete; returns its folder (what vLLM's ``reload_weights`` reads)."""
    return await asyncio.to_thread(get_store().wait_complete, prefix, timeout)


def is_complete(prefix: str) -> bool:
    return get_store().is_complete(prefix)


def versions() -> list[int]:
    """Complete policy versions in the store, ascending."""
    return get_store().versions()


def latest_version() -> int | None:
    """The newest complete policy version, or None."""
    vs = get_store().versions()
    return vs[-1] if vs else None


def reading(prefix: str):
    """Context manager: hold ``prefix``'s files against recycling while an engine reads them; yields the folder."""
    return get_store().reading(prefix)


def weights_path(version: int) -> str:
    """The folder holding policy ``version``'s safetensors files."""
    return get_store().path(policy_prefix(version))
