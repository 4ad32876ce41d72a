"""In-process tests of the controller's pure parts: routers, GPU allocator, configs, error handling."""

from __future__ import annotations

import collections
import socket

import pytest
from monarch._rust_bindings.monarch_hyperactor.supervision import SupervisionError
from monarch.actor import ActorError, concurrent_endpoint, endpoint

from forge.controller import ForgeActor, GpuAllocator, PlacementError, ServiceConfig
from forge.controller.faults import is_replica_failure, raise_remote
from forge.controller.provisioner import Provisioner, free_port
from forge.controller.service.interface import endpoint_names
from forge.controller.service.replica import Replica, ReplicaState
from forge.controller.service.router import LeastLoadedRouter, RoundRobinRouter, build_router


def _replicas(loads):
    out = []
    for i, load in enumerate(loads):
        r = Replica(i, f"s_r{i}")
        r.state = ReplicaState.HEALTHY
        r.in_flight = load
        out.append(r)
    return out


def test_round_robin_cycles_in_order():
    rs = _replicas([0, 0, 0])
    router = RoundRobinRouter()
    assert [router.pick(rs).index for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    # the healthy list shrinking (replica 1 died) keeps spreading over the survivors
    assert collections.Counter(router.pick([rs[0], rs[2]]).index for _ in range(10)) == {0: 5, 2: 5}


def test_least_loaded_picks_minimum_and_rotates_ties():
    rs = _replicas([3, 1, 2])
    router = LeastLoadedRouter()
    assert {router.pick(rs).index for _ in range(6)} == {1}
    rs = _replicas([2, 2, 2])
    assert [router.pick(rs).index for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_unknown_router_lists_valid_names():
    with pytest.raises(ValueError, match=r"did you mean 'round_robin'.*least_loaded"):
        build_router("round_robbin")


def test_gpu_allocator_gives_distinct_devices_and_refuses_clearly():
    alloc = GpuAllocator(device_count=4)  # fake count: no GPU on this machine
    a = alloc.allocate("trainer", 2)
    b = alloc.allocate("gen_r0", 1)
    assert a == ["0", "1"] and b == ["2"]
    with pytest.raises(PlacementError, match=r"'gen_r1' needs 2 GPU.*only 1 of 4 are free.*trainer"):
        alloc.allocate("gen_r1", 2)
    alloc.release("trainer")
    assert alloc.allocate("gen_r1", 2) == ["0", "1"]
    assert alloc.free() == ["3"]
    with pytest.raises(PlacementError, match="at least 1"):
        alloc.allocate("x", 0)


def test_gpu_allocator_respects_controller_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    alloc = GpuAllocator()
    assert alloc.total == 2 and alloc.allocate("m", 2) == ["4", "6"]


def test_provisioner_refuses_before_spawning():
    prov = Provisioner(GpuAllocator(device_count=1))
    with pytest.raises(PlacementError, match="hosts=3"):
        prov.spawn(procs=1, hosts=3)
    with pytest.raises(PlacementError, match="procs must be"):
        prov.spawn(procs=0)
    with pytest.raises(PlacementError, match="needs 2 GPU"):
        prov.spawn(procs=2, with_gpus=True, mesh_name="big")
    assert prov.live_meshes() == [] and prov.gpus.free() == ["0"]


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


class _Demo(ForgeActor):
    @endpoint
    async def plain(self) -> int:
        return 1

    @concurrent_endpoint
    async def conc(self) -> int:
        return 2


def test_options_makes_configured_subclass_and_keeps_user_class():
    cfg = _Demo.options(procs=2, num_replicas=3, mesh_name="demo", router="least_loaded")
    assert issubclass(cfg, _Demo) and cfg is not _Demo
    assert (cfg.procs, cfg.num_replicas, cfg.mesh_name, cfg.hosts, cfg.with_gpus) == (2, 3, "demo", None, False)
    assert (_Demo.procs, _Demo.num_replicas) == (1, 1)  # the base class is untouched
    assert cfg._actor_class() is _Demo and cfg.options(procs=1)._actor_class() is _Demo
    sc = ServiceConfig.from_actor_options(cfg)
    assert (sc.name, sc.num_replicas, sc.procs, sc.router) == ("demo", 3, 2, "least_loaded")
    assert endpoint_names(_Demo) == ["_forge_ping", "conc", "plain", "setup"]


def test_options_rejects_bad_values_with_suggestions():
    with pytest.raises(TypeError, match=r"unknown option 'health_intervall_s'.*did you mean 'health_interval_s'"):
        _Demo.options(health_intervall_s=1)
    with pytest.raises(ValueError, match="procs must be an int >= 1"):
        _Demo.options(procs=0)
    with pytest.raises(ValueError, match="num_replicas must be"):
        _Demo.options(num_replicas=0)
    with pytest.raises(ValueError, match="unknown router"):
        _Demo.options(router="random")
    with pytest.raises(ValueError, match="health_timeout_s must be > 0"):
        ServiceConfig(name="x", health_timeout_s=0)


def test_raise_remote_keeps_type_and_adds_remote_traceback():
    original = KeyError("missing")
    wrapped = ActorError(original, "Actor call x.f failed.\n Traceback: File 'remote.py', line 3, in f")
    with pytest.raises(KeyError) as info:
        raise_remote(wrapped)
    assert info.value is original and info.value.__cause__ is wrapped
    assert "remote.py" in "".join(info.value.__notes__)
    assert not is_replica_failure(wrapped)
    assert not is_replica_failure(ValueError("app"))
    assert is_replica_failure(SupervisionError("Endpoint call x.f() failed: the process exited"))


def test_sync_endpoints_are_refused_before_spawning():
    from forge.controller.actor import _check_async_endpoints

    class Mixed(ForgeActor):
        @endpoint
        def blocking(self) -> int:
            return 1

    with pytest.raises(TypeError, match=r"\['blocking'\] are plain `def`.*async def"):
        _check_async_endpoints(Mixed)
    _check_async_endpoints(_Demo)  # all-async, plain and concurrent: accepted
