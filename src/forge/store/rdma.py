"""Cross-host transport: copy a complete store version from another host's shared memory over Monarch RDMA.

The shared-memory store (``shm.py``) serves every process of one host. A generator on another host fetches a
version with ``fetch(server, prefix)``: a ``StoreServer`` actor on the trainer's host registers the version's part
files (already in shared memory, mapped in place, no copy) as ``monarch.rdma.RDMABuffer``s; the fetcher reads each
one straight into a file of its own host's store (a recycled file when one fits) and commits it there, after which
the generator reloads from local shared memory exactly as on one host. Without InfiniBand, Monarch falls back to
TCP (~0.7 GB/s measured here, FACTS.md) with a warning.

    server = await serve_store()                        # on the trainer's host (spawns a 1-process mesh)
    folder = await fetch(server, policy_prefix(v))      # on the generator's host; returns the local folder

This module imports Monarch; the rest of ``forge.store`` does not. Not covered: partial fetches of a DTensor shard
(a fetch copies whole part files), and servers that hold versions being written (only complete ones are served).
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import torch
from monarch.actor import Actor, endpoint

from forge.store.layout import MappedPart, read_header


class StoreServer(Actor):
    """Serves complete versions of this host's store as RDMA buffers (``open`` / ``release``)."""

    def __init__(self, root: str | None = None):
        if root is not None:  # else the store this process inherited through $FORGE_STORE_DIR
            os.environ["FORGE_STORE_DIR"] = root
        self._held: dict[str, tuple[Any, list[MappedPart], list[Any]]] = {}

    @endpoint
    async def open(self, prefix: str, timeout: float = 60.0) -> list[tuple[str, int, Any]]:
        """Hold ``prefix`` (waiting up to ``timeout`` s for it to be complete); ``[(file name, bytes, RDMABuffer)]``."""
        from monarch.rdma import RDMABuffer

        import forge.store as ws

        store = ws.get_store()
        await ws.wait_complete(prefix, timeout)
        if prefix in self._held:
            return [(os.path.basename(p.path), p.header.file_size, b) for p, b in zip(self._held[prefix][1],
                                                                                         self._held[prefix][2])]
        lock = store.reading(prefix)  # the files cannot be recycled while remote readers copy them
        folder = lock.__enter__()
        parts, bufs = [], []
        try:
            for name in sorted(os.listdir(folder)):
                if name.endswith(".safetensors"):
                    path = os.path.join(folder, name)
                    # A read-write shared map of the complete file (never written): RDMA registration wants it.
                    part = MappedPart(path, read_header(path), writable=True, write_header=False)
                    parts.append(part)
                    bufs.append(RDMABuffer(part._bytes))
        except BaseException:
            for p in parts:
                p.close()
            lock.__exit__(None, None, None)
            raise
        self._held[prefix] = (lock, parts, bufs)
        return [(os.path.basename(p.path), p.header.file_size, b) for p, b in zip(parts, bufs)]

    @endpoint
    async def release(self, prefix: str) -> None:
        """Drop the buffers and the hold on ``prefix`` (it may be recycled again)."""
        held = self._held.pop(prefix, None)
        if held is None:
            return
        lock, parts, bufs = held
        for b in bufs:
            await b.drop()
        del bufs
        for p in parts:
            p.close()
        lock.__exit__(None, None, None)


async def serve_store(root: str | None = None) -> Any:
    """Spawn a ``StoreServer`` for the store at ``root`` (default: this process's) in a 1-process mesh here."""
    from monarch.actor import this_host

    import forge.store as ws

    procs = this_host().spawn_procs(per_host={"procs": 1})
    server = procs.spawn("forge_store_server", StoreServer, root or ws.get_store().config.root)
    _PROCS[id(server)] = (server, procs)
    return server


async def stop_store_server(server: Any) -> None:
    """Stop a server started by ``serve_store`` (its process)."""
    held = _PROCS.pop(id(server), None)
    if held is not None:
        await held[1].stop()


_PROCS: dict[int, tuple[Any, Any]] = {}


async def fetch(server: Any, prefix: str, timeout: float = 60.0) -> str:
    """Copy the complete ``prefix`` from ``server``'s host into this host's store and commit it; returns its folder.

    A no-op if this host's store already holds ``prefix`` complete (e.g. the same host).
    """
    import forge.store as ws

    store = ws.get_store()
    if store.is_complete(prefix):
        return store.path(prefix)
    target = server if not hasattr(server, "slice") else server.slice(procs=0)
    files = await target.open.call_one(prefix, timeout)
    try:
        folder = store.path(prefix)
        os.makedirs(folder, exist_ok=True)
        for name, size, buf in files:
            path = os.path.join(folder, name)
            recycled = store._claim_recycled(path, size)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size != size:
                    os.ftruncate(fd, size)
                flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if recycled else 0)
                mm = mmap.mmap(fd, size, flags=flags)
            finally:
                os.close(fd)
            try:
                dst = torch.frombuffer(mm, dtype=torch.uint8)
                await buf.read_into(dst, timeout=int(max(timeout, 1)))
                del dst
            finally:
                mm.close()
        store.commit(prefix, rank=0, world_size=1)
    finally:
        await target.release.call_one(prefix)
    return store.path(prefix)
