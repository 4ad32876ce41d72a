"""Runtime smoke job: spawn a 2-replica service, route and fan out calls, kill a replica, watch it recover.

    python -m apps.smoke.main

Exercises forge's actor runtime end to end on real Monarch processes (CPU only, ~10 s) and exits 0 only if
every check passes: requests spread over both replicas, fanout reaches both, an endpoint's exception reaches
the caller, 64 requests in flight while a replica is SIGKILLed all return their own answer, and the killed
replica comes back under the same name in a new process.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time

from monarch.actor import concurrent_endpoint, endpoint

from forge.controller import ForgeActor


class Squarer(ForgeActor):
    """Squares numbers after a short pause; reports which replica answered."""

    def __init__(self, delay_s: float = 0.2):
        self.delay_s = delay_s
        self.served = 0

    @concurrent_endpoint
    async def square(self, x: int) -> tuple[int, str]:
        await asyncio.sleep(self.delay_s)
        self.served += 1
        return x * x, os.environ["FORGE_MESH_NAME"]

    @endpoint
    async def whoami(self) -> tuple[str, int]:
        return os.environ["FORGE_MESH_NAME"], os.getpid()

    @endpoint
    async def divide(self, a: float, b: float) -> float:
        return a / b


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
    if not ok:
        raise SystemExit(f"smoke check failed: {what}")


async def run() -> None:
    t0 = time.perf_counter()
    svc = await Squarer.options(num_replicas=2, mesh_name="smoke", health_interval_s=0.5).as_service()
    print(f"service up in {time.perf_counter() - t0:.1f} s: {svc}")
    try:
        answers = [await svc.square.route(x) for x in range(8)]
        check([a for a, _ in answers] == [x * x for x in range(8)], "route() returns each request's answer")
        spread = collections.Counter(r for _, r in answers)
        check(spread == {"smoke_r0": 4, "smoke_r1": 4}, f"round-robin spreads load: {dict(spread)}")
        who = dict(await svc.whoami.fanout())
        check(sorted(who) == ["smoke_r0", "smoke_r1"], "fanout() reaches both replicas")
        try:
            await svc.divide.route(1.0, 0.0)
            check(False, "an endpoint's exception reaches the caller")
        except ZeroDivisionError:
            check(True, "an endpoint's exception reaches the caller as ZeroDivisionError")

        victim = svc.service.replicas[0]
        old_pid = who["smoke_r0"]
        in_flight = [asyncio.create_task(svc.square.route(x)) for x in range(64)]
        await asyncio.sleep(0.05)
        os.kill(old_pid, signal.SIGKILL)
        print(f"SIGKILLed {victim.name} (pid {old_pid}) with {victim.in_flight} requests in flight on it")
        t_kill = time.perf_counter()
        answers = await asyncio.wait_for(asyncio.gather(*in_flight), 120)
        check([a for a, _ in answers] == [x * x for x in range(64)],
              f"all 64 in-flight requests answered once each ({svc.get_metrics().retried_requests} re-sent)")
        while not victim.healthy and time.perf_counter() - t_kill < 120:
            await asyncio.sleep(0.2)
        who = dict(await svc.whoami.fanout())
        check(victim.healthy and who.get("smoke_r0") not in (None, old_pid),
              f"{victim.name} restarted in {time.perf_counter() - t_kill:.1f} s as pid {who.get('smoke_r0')}")
        print("metrics:")
        for m in svc.get_metrics().replicas:
            print(f"  {m.name}: {m.state}, {m.requests} requests, {m.errors} errors, {m.failures} lost to "
                  f"failure, p50 {m.latency_ms_p50:.1f} ms, restarts {m.restarts}")
    finally:
        await svc.shutdown()
    print(f"smoke job passed in {time.perf_counter() - t0:.1f} s")


def main() -> int:
    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
