"""Two real gloo ranks put sharded DTensors; readers with other layouts get exactly their own slices back."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.integration


def _full(name: str) -> torch.Tensor:
    """The reference full tensors, rebuilt independently in every process from a fixed seed."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))  # str hash() differs per process
    shapes = {"w_row": (7, 5), "w_col": (4, 9), "bias": (6,)}
    return torch.randn(*shapes[name], generator=g)


def _worker(rank: int, world: int, port: int, store_dir: str, errq) -> None:
    try:
        os.environ.update(FORGE_STORE_DIR=store_dir, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        import asyncio

        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Replicate, Shard, distribute_tensor

        import forge.store as ws

        mesh = init_device_mesh("cpu", (world,))
        # Uneven Shard(0) (7 rows over 2 ranks), Shard(1), and a replicated tensor written once.
        put_layout = {"w_row": [Shard(0)], "w_col": [Shard(1)], "bias": [Replicate()]}
        sd = {n: distribute_tensor(_full(n), mesh, p) for n, p in put_layout.items()}
        prefix = ws.policy_prefix(5)

        async def run():
            await ws.put_state_dict(sd, prefix)
            await ws.put("single/w_col", sd["w_col"])
            dist.barrier()
            await ws.commit(prefix)
            dist.barrier()
            assert ws.is_complete(prefix)
            # Read back into the *other* layouts: rows become columns and vice versa, bias sharded.
            get_layout = {"w_row": [Shard(1)], "w_col": [Shard(0)], "bias": [Shard(0)]}
            into = {n: distribute_tensor(torch.zeros_like(_full(n)), mesh, p) for n, p in get_layout.items()}
            await ws.get_state_dict(prefix, into=into)
            for n, d in into.items():
                ref = distribute_tensor(_full(n), mesh, get_layout[n]).to_local()
                assert torch.equal(d.to_local(), ref), (rank, n)
                assert torch.equal(d.full_tensor(), _full(n)), (rank, n)
            single = distribute_tensor(torch.zeros(4, 9), mesh, [Replicate()])
            await ws.get("single/w_col", into=single)
            assert torch.equal(single.to_local(), _full("w_col"))
            full = await ws.get(f"{prefix}/w_row")
            assert torch.equal(full, _full("w_row"))

        asyncio.run(run())
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as e:  # report to the parent, which fails the test with it
        import traceback

        errq.put(f"rank {rank}: {e!r}\n{traceback.format_exc()}")
        raise


@pytest.mark.timeout(120)
def test_two_rank_dtensor_round_trip_into_other_sharding(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store_dir = str(tmp_path / "store")
    ctx = mp.get_context("spawn")
    errq = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, store_dir, errq)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(100)
    errors = []
    while not errq.empty():
        errors.append(errq.get())
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not errors, "\n".join(errors)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    # The stored file holds the exact full tensors (independent reader, this process, no process group).
    from safetensors.torch import load_file

    folder = os.path.join(store_dir, "policy", "v5")
    (part,) = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    loaded = load_file(os.path.join(folder, part))
    for n in ("w_row", "w_col", "bias"):
        assert torch.equal(loaded[n], _full(n)), n
