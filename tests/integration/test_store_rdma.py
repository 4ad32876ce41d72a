"""Cross-host transport on real Monarch processes: a StoreServer with its own store folder (standing in for another
host's shared memory) serves a version over RDMABuffer (TCP fallback here); the fetcher gets identical bytes."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

import forge.store as ws

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_fetch_a_version_from_another_store_over_rdma(monkeypatch):
    import shutil

    from forge.store.rdma import fetch, serve_store, stop_store_server

    remote = tempfile.mkdtemp(dir="/dev/shm", prefix="forge-rdma-remote-")
    local = tempfile.mkdtemp(dir="/dev/shm", prefix="forge-rdma-local-")
    try:
        g = torch.Generator().manual_seed(0)
        sd = {"model.w": torch.randn(300, 257, generator=g), "model.b": torch.randn(7, generator=g).bfloat16(),
              "lm_head.weight": torch.randn(64, 33, generator=g)}
        monkeypatch.setenv("FORGE_STORE_DIR", remote)  # the "trainer host": the server inherits this store
        await ws.put_state_dict(sd, ws.policy_prefix(4))
        await ws.commit(ws.policy_prefix(4))
        server = await serve_store()  # serves the store configured now (remote)
        monkeypatch.setenv("FORGE_STORE_DIR", local)  # the "generator host"
        assert not ws.is_complete(ws.policy_prefix(4))
        folder = await fetch(server, ws.policy_prefix(4))
        assert folder == os.path.join(local, "policy", "v4") and ws.is_complete(ws.policy_prefix(4))
        got = await ws.get_state_dict(ws.policy_prefix(4))
        for k, v in sd.items():
            assert torch.equal(got[k], v), k
        # Byte-identical files (the safetensors reader sees the same checkpoint).
        (name,) = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
        from pathlib import Path

        assert Path(folder, name).read_bytes() == Path(remote, "policy", "v4", name).read_bytes()
        # Fetching again is a no-op; a version the server never completes times out with a clear error.
        assert await fetch(server, ws.policy_prefix(4)) == folder
        with pytest.raises(Exception, match="not complete after"):
            await fetch(server, ws.policy_prefix(5), timeout=0.5)
        await stop_store_server(server)
    finally:
        shutil.rmtree(remote, ignore_errors=True)
        shutil.rmtree(local, ignore_errors=True)
