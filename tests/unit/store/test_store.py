"""forge.store in one process: layout readable by safetensors, keys/delete, commit and version dropping, errors."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import forge.store as ws
from forge.store.layout import plan_part


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("FORGE_STORE_KEEP_VERSIONS", raising=False)
    yield ws.get_store()


def _sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(11, 6, generator=g),
        "model.norm.weight": torch.randn(6, generator=g).to(torch.bfloat16),
        "lm_head.weight": torch.randn(11, 6, generator=g).to(torch.float16),
        "step": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }


async def test_state_dict_round_trip_and_safetensors_reader(store):
    sd = _sd()
    await ws.put_state_dict(sd, ws.policy_prefix(3))
    got = await ws.get_state_dict("policy/v3")
    assert set(got) == set(sd)
    for k in sd:
        assert got[k].dtype == sd[k].dtype and torch.equal(got[k], sd[k]), k
    # The folder is an ordinary safetensors checkpoint: the independent reader sees the same tensors.
    files = [f for f in os.listdir(ws.weights_path(3)) if f.endswith(".safetensors")]
    assert len(files) == 1
    loaded = load_file(os.path.join(ws.weights_path(3), files[0]))
    for k in sd:
        assert torch.equal(loaded[k], sd[k]), k
    with safe_open(os.path.join(ws.weights_path(3), files[0]), "pt") as f:
        assert f.metadata()["format"] == "pt"


async def test_put_get_single_keys_and_into(store):
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    await ws.put("a/b/w", t)
    await ws.put("top", torch.tensor([1.5, -2.0]))
    assert torch.equal(await ws.get("a/b/w"), t)
    assert torch.equal(await ws.get("top"), torch.tensor([1.5, -2.0]))
    out = torch.zeros(3, 4)
    r = await ws.get("a/b/w", into=out)
    assert r is out and torch.equal(out, t)
    # get returns a copy: changing it does not change the store
    g = await ws.get("a/b/w")
    g.add_(1)
    assert torch.equal(await ws.get("a/b/w"), t)
    # overwrite in place with a new value of another shape
    await ws.put("a/b/w", torch.ones(2))
    assert torch.equal(await ws.get("a/b/w"), torch.ones(2))
    assert await ws.keys() == ["a/b/w", "top"]
    assert await ws.keys("a/") == ["a/b/w"]


async def test_get_errors_are_specific(store):
    await ws.put("p/w", torch.zeros(2, 3))
    with pytest.raises(KeyError, match="no key 'p/nope'"):
        await ws.get("p/nope")
    with pytest.raises(ValueError, match=r"stored shape \(2, 3\) != into's shape \(3, 2\)"):
        await ws.get("p/w", into=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="stored dtype torch.float32 != into's dtype torch.float16"):
        await ws.get("p/w", into=torch.zeros(2, 3, dtype=torch.float16))
    with pytest.raises(ValueError, match="non-empty relative path"):
        await ws.put("/abs", torch.zeros(1))
    with pytest.raises(ValueError, match="hidden path component"):
        await ws.put("p/.commit/x", torch.zeros(1))
    with pytest.raises(TypeError, match="needs a torch.Tensor"):
        await ws.put("p/x", [1, 2])
    with pytest.raises(ValueError, match="must be a non-negative int"):
        ws.policy_prefix(-1)


async def test_name_in_two_parts_is_rejected(store):
    await ws.put_state_dict({"w": torch.zeros(2), "b": torch.zeros(1)}, "m")
    with pytest.raises(ValueError, match="already stored under"):
        await ws.put("m/w", torch.ones(2))


async def test_commit_completes_after_all_ranks_and_drops_old_versions(store):
    for v in range(4):
        await ws.put_state_dict(_sd(v), ws.policy_prefix(v))
        # Two ranks: the version is complete only after the second commit.
        assert await ws.commit(ws.policy_prefix(v), rank=1, world_size=2) is False
        assert not ws.is_complete(ws.policy_prefix(v))
        assert await ws.commit(ws.policy_prefix(v), rank=0, world_size=2) is True
        assert ws.is_complete(ws.policy_prefix(v))
    assert ws.versions() == [2, 3]  # keep_versions=2
    assert ws.latest_version() == 3
    assert not os.path.exists(ws.weights_path(0)) and not os.path.exists(ws.weights_path(1))
    got = await ws.get_state_dict(ws.policy_prefix(3))
    assert torch.equal(got["model.embed_tokens.weight"], _sd(3)["model.embed_tokens.weight"])
    with pytest.raises(FileExistsError, match="already committed"):
        await ws.put_state_dict(_sd(), ws.policy_prefix(3))
    with pytest.raises(LookupError, match="was dropped"):
        await ws.wait_complete(ws.policy_prefix(1), timeout=1.0)
    with pytest.raises(TimeoutError, match="not complete after"):
        await ws.wait_complete(ws.policy_prefix(9), timeout=0.05)
    assert await ws.wait_complete(ws.policy_prefix(3)) == ws.weights_path(3)


async def test_delete_and_configure(store, tmp_path):
    await ws.put_state_dict(_sd(), "policy/v1")
    await ws.put("other/x", torch.zeros(1))
    assert await ws.delete("policy/v1") == 5
    assert await ws.keys("policy") == []
    assert await ws.delete("other/x") == 1
    cfg = ws.configure(str(tmp_path / "elsewhere"), keep_versions=3)
    assert cfg.root == str(tmp_path / "elsewhere") and cfg.keep_versions == 3
    assert os.environ["FORGE_STORE_DIR"] == cfg.root  # inherited by procs spawned after this


def test_layout_aligns_every_tensor_to_its_element_size():
    plan = plan_part({"a": (torch.int8, (3,)), "b": (torch.float64, (2,)), "c": (torch.bfloat16, (5,))})
    assert plan.data_start % 8 == 0
    for s in plan.tensors.values():
        assert s.begin % s.dtype.itemsize == 0
    # contiguous, no holes (the safetensors reader rejects holes)
    spans = sorted((s.begin, s.end) for s in plan.tensors.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert plan.file_size == plan.data_start + 3 + 16 + 10


async def test_dropped_version_files_are_recycled_unless_being_read(store):
    sd = _sd()

    async def push(v, seed):
        await ws.put_state_dict(_sd(seed), ws.policy_prefix(v))
        await ws.commit(ws.policy_prefix(v))

    def inode(v):
        (f,) = [f for f in os.listdir(ws.weights_path(v)) if f.endswith(".safetensors")]
        return os.stat(os.path.join(ws.weights_path(v), f)).st_ino

    await push(0, 0)
    await push(1, 1)
    ino0 = inode(0)
    await push(2, 2)  # drops v0: its file goes to the recycle bin
    await push(3, 3)  # drops v1; v3 reuses v0's file (same size)
    assert inode(3) == ino0
    got = await ws.get_state_dict(ws.policy_prefix(3))
    for k in sd:  # the recycled pages hold v3's data, header included
        assert torch.equal(got[k], _sd(3)[k]), k
    # While v2 is held by a reader, dropping it must not recycle (and so overwrite) its file.
    with ws.reading(ws.policy_prefix(2)) as folder:
        (f,) = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
        fd = os.open(os.path.join(folder, f), os.O_RDONLY)
        await push(4, 4)  # drops v2 (held: unlinked, not recycled)
        await push(5, 5)  # drops v3 (recycled) and may reuse a recycled file, never v2's
        from safetensors.torch import load

        with os.fdopen(fd, "rb") as fh:
            held = load(fh.read())
        for k in sd:
            assert torch.equal(held[k], _sd(2)[k]), k
    assert ws.versions() == [4, 5]
    with pytest.raises(LookupError, match="dropped"), ws.reading(ws.policy_prefix(2)):
        pass


def test_rewrite_header_reuses_a_mapping_for_another_layout(tmp_path):
    """What a cached (page-locked) writer mapping does when a recycled file of the same size gets a new version
    with other tensor names: the file must read back as the new layout, byte for byte."""
    from forge.store.layout import MappedPart, read_header

    a = plan_part({"w": (torch.float32, (4, 4)), "b": (torch.float32, (4,))})
    b = plan_part({"w": (torch.float32, (4, 4)), "c": (torch.float32, (4,))})  # same size, other name
    assert a.file_size == b.file_size
    path = str(tmp_path / "part.safetensors")
    part = MappedPart(path, a, writable=True)
    part.view("w").fill_(1.0)
    part.view("b").fill_(2.0)
    part.rewrite_header(b)
    part.view("c").copy_(torch.arange(4.0))
    del part
    got = load_file(path)
    assert read_header(path).tensors.keys() == {"w", "c"}
    assert torch.equal(got["c"], torch.arange(4.0)) and torch.equal(got["w"], torch.ones(4, 4))
    other = plan_part({"w": (torch.float32, (5, 4))})
    with pytest.raises(ValueError, match="header for .* bytes, file has"):
        MappedPart(path, b, writable=True).rewrite_header(other)


def test_cpu_puts_do_not_touch_the_page_locked_cache(store):
    """Without CUDA tensors the store maps, writes and unmaps (nothing cached, nothing registered)."""
    from forge.store import pinned

    store.put_state_dict(_sd(), "policy/v1")
    assert pinned.cached_files() == 0
    assert pinned.available() == torch.cuda.is_available()
