"""ForgeActor on real Monarch processes: as_actor, setup, rank env + a real gloo group, errors, shutdown."""

from __future__ import annotations

import os
import uuid

import pytest
from controller_actors import Echo, GlooWorker, processes_with_mesh_prefix, wait_until

from forge.controller import ForgeActor, PlacementError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_as_actor_runs_setup_and_call_one():
    name = f"echo_{uuid.uuid4().hex[:6]}"
    actor = await Echo.options(mesh_name=name).as_actor(tag="t1")
    try:
        info = await actor.whoami.call_one()
        assert info["tag"] == "t1" and info["setup_calls"] == 1 and info["replica"] == name
        assert (await actor.work.call_one(7))["square"] == 49
        assert processes_with_mesh_prefix(name) == [info["pid"]]
    finally:
        await Echo.shutdown(actor)
    await wait_until(lambda: not processes_with_mesh_prefix(name), 30, f"processes of {name} exit")


async def test_two_procs_get_rank_env_and_form_a_gloo_group():
    name = f"gloo_{uuid.uuid4().hex[:6]}"
    actor = await GlooWorker.options(procs=2, mesh_name=name).as_actor(scale=2.0)
    try:
        envs = [v for _, v in (await actor.env.call()).items()]
        assert sorted(e["RANK"] for e in envs) == ["0", "1"]
        assert {e["WORLD_SIZE"] for e in envs} == {"2"}
        assert len({e["MASTER_PORT"] for e in envs}) == 1 and {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}
        assert all(e["LOCAL_RANK"] == e["RANK"] for e in envs)
        # with_gpus=False: the runtime leaves CUDA_VISIBLE_DEVICES as the controller had it
        assert {e["CUDA_VISIBLE_DEVICES"] for e in envs} == {os.environ.get("CUDA_VISIBLE_DEVICES")}
        # call() reaches every rank; the all-reduce needs both: 1.5*2*(1) + 1.5*2*(2) = 9
        sums = [v for _, v in (await actor.allreduce.call(1.5)).items()]
        assert sums == [9.0, 9.0]
    finally:
        await GlooWorker.shutdown(actor)
    await wait_until(lambda: not processes_with_mesh_prefix(name), 30, f"processes of {name} exit")


async def test_remote_exception_raises_at_caller_with_traceback():
    actor = await Echo.as_actor()
    try:
        with pytest.raises(Exception) as info:
            await actor.fail.call_one("x")
        text = str(info.value)
        assert "bad request: x" in text and "_raise_value_error_deep_inside" in text
        assert (await actor.incr.call_one()) == 1  # the actor survived its exception
    finally:
        await Echo.shutdown(actor)


async def test_setup_failure_raises_and_cleans_up(tmp_path):
    from controller_actors import SetupFailsIfMarker

    marker = tmp_path / "marker"
    marker.write_text("x")
    name = f"bad_{uuid.uuid4().hex[:6]}"
    with pytest.raises(Exception, match="setup refused"):
        await SetupFailsIfMarker.options(mesh_name=name).as_actor(str(marker))
    await wait_until(lambda: not processes_with_mesh_prefix(name), 30, f"processes of {name} exit")


async def test_placement_errors_are_specific():
    with pytest.raises(PlacementError, match="as_service"):
        await Echo.options(num_replicas=2).as_actor()
    with pytest.raises(PlacementError, match="hosts=2"):
        await Echo.options(hosts=2).as_actor()
    with pytest.raises(ValueError, match="was not launched"):
        await ForgeActor.shutdown(object())
