"""Services on real Monarch processes: routing spreads load, sessions stick, fanout, errors, metrics."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import uuid

import pytest
from controller_actors import Echo, SetupFailsIfMarker, processes_with_mesh_prefix, wait_until

from forge.controller import ServiceUnavailableError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


async def test_routing_fanout_sessions_errors_metrics():
    name = _name("svc")
    svc = await Echo.options(num_replicas=3, mesh_name=name).as_service(tag="T")
    try:
        # round-robin: 30 sequential routes -> exactly 10 per replica
        served = [(await svc.work.route(i))["replica"] for i in range(30)]
        assert collections.Counter(served) == {f"{name}_r{k}": 10 for k in range(3)}

        # fanout / call_all reach every healthy replica, once each
        who = await svc.whoami.fanout()
        assert sorted(w["replica"] for w in who) == [f"{name}_r{k}" for k in range(3)]
        assert all(w["tag"] == "T" and w["setup_calls"] == 1 for w in who)
        again = await svc.call_all("whoami")
        assert sorted(w["pid"] for w in again) == sorted(w["pid"] for w in who)

        # sessions: each concurrent task keeps its own replica, so its counter counts 1..5 without gaps
        # (a non-sticky route would spread the 5 calls over 3 replicas and repeat values).
        await svc.incr.fanout()  # every counter at 1, so only stickiness gives 2..6 in order
        async def one_session():
            async with svc.session():
                return [await svc.incr.route() for _ in range(5)]
        runs = await asyncio.gather(*(one_session() for _ in range(3)))
        for run in runs:
            assert run == list(range(run[0], run[0] + 5))
        assert sorted(run[0] for run in runs) == [2, 2, 2]  # three sessions landed on three replicas

        sid = await svc.start_session()
        inside = [(await svc.work.route(i))["replica"] for i in range(6)]
        assert len(set(inside)) == 1
        await svc.terminate_session(sid)
        outside = [(await svc.work.route(i))["replica"] for i in range(6)]
        assert len(set(outside)) == 3

        # remote exception: original type, remote traceback attached, not retried, replica stays healthy
        before = svc.get_metrics()
        with pytest.raises(ValueError, match="bad request: boom") as info:
            await svc.fail.route("boom")
        assert "_raise_value_error_deep_inside" in "".join(getattr(info.value, "__notes__", []))
        after = svc.get_metrics()
        assert sum(r.errors for r in after.replicas) == sum(r.errors for r in before.replicas) + 1
        assert sum(r.requests for r in after.replicas) == sum(r.requests for r in before.replicas) + 1
        assert after.retried_requests == 0 and after.healthy_replicas == 3

        # metrics: every request counted once, nothing in flight, latencies measured
        m = svc.get_metrics()
        assert sum(r.requests for r in m.replicas) == 30 + 3 + 3 + 3 + 15 + 6 + 6 + 1
        assert all(r.queue_depth == 0 and r.healthy and r.latency_ms_p50 > 0 for r in m.replicas)
        assert m.to_dict()[f"{name}/errors"] == 1.0

        with pytest.raises(AttributeError, match="no endpoint 'nope'"):
            _ = svc.nope
    finally:
        await svc.shutdown()
    await wait_until(lambda: not processes_with_mesh_prefix(name), 30, "service processes exit")
    with pytest.raises(ServiceUnavailableError, match="shut down"):
        await svc.work.route(1)


async def test_least_loaded_router_avoids_busy_replica():
    name = _name("ll")
    svc = await Echo.options(num_replicas=2, mesh_name=name, router="least_loaded").as_service()
    try:
        # 4 slow requests occupy both replicas (2 each); then one replica finishes its load early.
        slow = [asyncio.create_task(svc.work.route(i, delay=3.0)) for i in range(2)]
        await asyncio.sleep(0.2)
        busy = {r.name for r in svc.service.replicas if r.in_flight}
        assert len(busy) == 2  # the two slow ones went to different replicas
        # the quick ones all go to whichever has fewer in flight; with equal load they alternate
        quick = [(await svc.work.route(i))["replica"] for i in range(4)]
        assert collections.Counter(quick) == {f"{name}_r0": 2, f"{name}_r1": 2}
        await asyncio.gather(*slow)
        loaded = asyncio.create_task(svc.work.route(99, delay=3.0))
        await asyncio.sleep(0.2)
        busy_name = next(r.name for r in svc.service.replicas if r.in_flight)
        quick = [(await svc.work.route(i))["replica"] for i in range(6)]
        assert busy_name not in quick and len(quick) == 6
        await loaded
    finally:
        await svc.shutdown()


async def test_no_healthy_replica_raises_naming_service_and_reason(tmp_path):
    name = _name("lonely")
    marker = tmp_path / "refuse"
    svc = await SetupFailsIfMarker.options(
        num_replicas=1, mesh_name=name, unavailable_timeout_s=8.0, restart_backoff_s=0.5,
        health_interval_s=0.5).as_service(str(marker))
    try:
        marker.write_text("x")  # from now on a restart's setup() fails
        old_pid = await svc.pid.route()
        with pytest.raises(ServiceUnavailableError) as info:
            await asyncio.gather(svc.service.replicas[0].actor.crash.call_one(), return_exceptions=True)
            await svc.pid.route()
        text = str(info.value)
        assert name in text and "no healthy replica within 8 s" in text and "setup refused" in text
        marker.unlink()  # restarts succeed again: the service heals by itself
        await wait_until(lambda: svc.service.replicas[0].healthy, 60, "replica restarts")
        assert (await svc.pid.route()) != old_pid
    finally:
        await svc.shutdown()


async def test_spmd_replicas_route_to_every_rank_and_restart_whole():
    from controller_actors import GlooWorker

    name = _name("spmd")
    svc = await GlooWorker.options(procs=2, num_replicas=2, mesh_name=name, health_interval_s=0.5).as_service(
        scale=2.0)
    try:
        # each route runs on both ranks of one replica (the all-reduce needs both): 2*(1+2) * x
        assert [await svc.allreduce.route(float(x)) for x in range(4)] == [6.0 * x for x in range(4)]
        assert await svc.allreduce.fanout(1.0) == [6.0, 6.0]
        replica = svc.service.replicas[1]
        old = replica.pids
        assert len(old) == 2
        os.kill(old[1], signal.SIGKILL)  # one rank dies: the whole replica is replaced
        await wait_until(lambda: replica.restarts == 1 and replica.healthy, 90, "the SPMD replica to restart")
        assert not set(replica.pids) & set(old)
        assert await svc.allreduce.fanout(0.5) == [3.0, 3.0]
    finally:
        await svc.shutdown()
    await wait_until(lambda: not processes_with_mesh_prefix(name), 30, "service processes exit")
