"""Fault tolerance on real Monarch processes: kills during load, repeated kills, hangs, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest
from controller_actors import Echo, processes_with_mesh_prefix, wait_until

from forge.controller import faults

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _kill(replica, how: str) -> None:
    if how == "os_exit":  # the process exits from inside one of its endpoints
        with contextlib.suppress(Exception):
            await replica.actor.crash.call_one(13)
    else:  # SIGKILL from outside
        os.kill(replica.pids[0], signal.SIGKILL)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["os_exit", "sigkill"])
async def test_inflight_requests_survive_a_killed_replica_exactly_once(how):
    name = _name(f"kill_{how}")
    svc = await Echo.options(num_replicas=2, mesh_name=name, health_interval_s=1.0).as_service()
    s = svc.service
    try:
        victim, survivor = s.replicas
        old_pid, survivor_pid = victim.pids[0], survivor.pids[0]
        tasks = [asyncio.create_task(svc.work.route(i, delay=3.0)) for i in range(100)]
        await wait_until(lambda: victim.in_flight >= 25, 30, "requests in flight on the victim")
        await _kill(victim, how)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 120)

        # every request answered once, in order, with its own correct result
        assert [r["i"] for r in results] == list(range(100))
        assert [r["square"] for r in results] == [i * i for i in range(100)]
        assert old_pid not in {r["pid"] for r in results}  # nothing "completed" on the dead replica
        assert s.retried_requests >= 25  # the victim's requests were re-sent
        assert victim.failures >= 25 and victim.last_failure

        # the replica comes back under the same name, in a new process
        await wait_until(lambda: victim.healthy, 60, "the killed replica to restart")
        assert victim.restarts == 1 and survivor.restarts == 0 and victim.pids[0] != old_pid
        who = {w["replica"]: w["pid"] for w in await svc.whoami.fanout()}
        assert who == {f"{name}_r0": victim.pids[0], f"{name}_r1": survivor_pid}

        # exactly once among live processes: no request ran twice, each answer came from where it ran
        ledgers = dict(zip((w for w in who.values()), await svc.processed.fanout()))
        ran = [i for ledger in ledgers.values() for i in ledger]
        assert len(ran) == len(set(ran))
        for r in results:
            assert r["i"] in ledgers[r["pid"]]
    finally:
        await svc.shutdown()
    await wait_until(lambda: not processes_with_mesh_prefix(name), 30, "service processes exit")


@pytest.mark.timeout(300)
async def test_repeated_kills_keep_names_stable_and_controller_alive():
    name = _name("stable")
    svc = await Echo.options(num_replicas=2, mesh_name=name, health_interval_s=0.5).as_service()
    s = svc.service
    try:
        seen_pids = set()
        for k, how in enumerate(["sigkill", "os_exit", "sigkill"]):
            victim = s.replicas[k % 2]
            seen_pids.add(victim.pids[0])
            await _kill(victim, how)
            # the health ping (no traffic) notices the death; the replica restarts under its name
            await wait_until(lambda v=victim, k=k: v.restarts == (k // 2) + 1 and v.healthy, 60,
                             f"kill #{k + 1} ({how}) to be repaired")
            assert victim.pids[0] not in seen_pids
            who = sorted(w["replica"] for w in await svc.whoami.fanout())
            assert who == [f"{name}_r0", f"{name}_r1"]
            assert [(await svc.work.route(i))["square"] for i in range(4)] == [0, 1, 4, 9]
        assert [r.restarts for r in s.replicas] == [2, 1]
        # the deaths reached forge's fault hook (Monarch's default hook would have exited this process)
        assert any(name in text for text in faults.faults_seen())
        assert [m.name for m in svc.get_metrics().replicas] == [f"{name}_r0", f"{name}_r1"]
    finally:
        await svc.shutdown()
    await wait_until(lambda: not processes_with_mesh_prefix(name), 30, "service processes exit")


@pytest.mark.timeout(240)
async def test_hung_replica_is_detected_by_health_ping_and_replaced():
    name = _name("hung")
    svc = await Echo.options(num_replicas=2, mesh_name=name, health_interval_s=0.5,
                             health_timeout_s=3.0).as_service()
    s = svc.service
    try:
        victim = s.replicas[0]
        old_pid = victim.pids[0]
        freeze = asyncio.ensure_future(victim.actor.freeze.call_one(600))
        await wait_until(lambda: not victim.healthy, 30, "the frozen replica to be marked unhealthy")
        assert "health ping" in victim.last_failure
        # meanwhile requests keep being served by the other replica
        assert {(await svc.work.route(i))["replica"] for i in range(4)} == {f"{name}_r1"}
        await wait_until(lambda: victim.healthy, 90, "the frozen replica to be replaced")
        assert victim.pids[0] != old_pid
        await wait_until(lambda: _gone(old_pid), 30, "the frozen process to be stopped")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(freeze, 30)
    finally:
        await svc.shutdown()
    await wait_until(lambda: not processes_with_mesh_prefix(name), 30, "service processes exit")


@pytest.mark.timeout(180)
async def test_subprocesses_of_a_dead_or_stopped_replica_are_reaped():
    name = _name("reap")
    svc = await Echo.options(num_replicas=1, mesh_name=name, health_interval_s=0.5).as_service()
    try:
        replica = svc.service.replicas[0]
        orphan = await svc.spawn_child.route()
        os.kill(replica.pids[0], signal.SIGKILL)  # the child survives its parent's death...
        await wait_until(lambda: replica.restarts == 1 and replica.healthy, 60, "the replica to restart")
        await wait_until(lambda: _gone(orphan), 10, "the dead incarnation's subprocess to be reaped")
        child = await svc.spawn_child.route()  # ...and a live replica's child goes with a normal shutdown,
        unmarked = await svc.spawn_child.route(clean_env=True)  # even one without the mesh's environment marker
        assert not _gone(child) and not _gone(unmarked)
    finally:
        await svc.shutdown()
    await wait_until(lambda: _gone(child) and _gone(unmarked), 10, "the subprocesses to be reaped at shutdown")


_CONTROLLER = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, {tests!r})
    from controller_actors import Echo, GlooWorker

    async def main():
        svc = await Echo.options(num_replicas=2, mesh_name={prefix!r} + "_svc").as_service()
        actor = await GlooWorker.options(procs=2, mesh_name={prefix!r} + "_actor").as_actor()
        await svc.work.route(1)
        print(json.dumps({{"ready": True}}), flush=True)
        await asyncio.sleep(3600)

    if __name__ == "__main__":
        asyncio.run(main())
""")


@pytest.mark.timeout(180)
async def test_killed_controller_leaves_no_process(tmp_path):
    prefix = _name("orphan")
    script = tmp_path / "controller.py"
    script.write_text(_CONTROLLER.format(tests=str(Path(__file__).parent), prefix=prefix))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, cwd=tmp_path, text=True)  # noqa: ASYNC220 - Popen does not block
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        assert json.loads(line) == {"ready": True}
        spawned = processes_with_mesh_prefix(prefix)
        assert len(spawned) == 4  # 2 replicas + a 2-process actor
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        await wait_until(lambda: not processes_with_mesh_prefix(prefix), 60,
                         f"the children {spawned} of the killed controller to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
