"""Benchmark: the cost of a service `route()` over a raw Monarch `call_one()` on the same actor.

    python benchmarks/bench_service.py [--calls 2000] [--callers 64] [--per-caller 100]

Both paths reach the same single-replica actor (the raw handle is the service's replica), measured in
interleaved blocks so machine noise hits both alike. Prints median latency of each, throughput with
`--callers` concurrent callers, and the ratios (goal: route latency <= 1.2x raw; issue 3, item 6).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from monarch.actor import concurrent_endpoint

from forge.controller import ForgeActor


class Noop(ForgeActor):
    """Returns its argument: the cheapest possible endpoint, so only the call path is measured."""

    @concurrent_endpoint
    async def echo(self, x: int) -> int:
        return x


async def _latencies(call, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t0)
    return out


async def _throughput(call, callers: int, per_caller: int) -> float:
    async def caller(c: int) -> None:
        for i in range(per_caller):
            await call(c * per_caller + i)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    return callers * per_caller / (time.perf_counter() - t0)


async def main(args: argparse.Namespace) -> None:
    svc = await Noop.options(num_replicas=1, mesh_name="bench_noop").as_service()
    raw_ep = svc.service.replicas[0].actor.echo
    raw = raw_ep.call_one
    route = svc.echo.route
    try:
        await _latencies(raw, 200)  # warm up both paths
        await _latencies(route, 200)
        raw_lat, route_lat = [], []
        block = 100
        for _ in range(args.calls // block):  # interleave blocks: noise hits both paths alike
            raw_lat += await _latencies(raw, block)
            route_lat += await _latencies(route, block)
        raw_tp, route_tp = [], []
        for _ in range(5):
            raw_tp.append(await _throughput(raw, args.callers, args.per_caller))
            route_tp.append(await _throughput(route, args.callers, args.per_caller))
    finally:
        await svc.shutdown()

    raw_med, route_med = statistics.median(raw_lat), statistics.median(route_lat)
    raw_best, route_best = max(raw_tp), max(route_tp)
    print(f"calls per path: {len(raw_lat)} (median latency), {args.callers} callers x {args.per_caller} "
          f"calls x 5 rounds (throughput, best round)")
    print(f"raw call_one   median latency {1e3 * raw_med:8.3f} ms   throughput {raw_best:9.0f} req/s")
    print(f"service route  median latency {1e3 * route_med:8.3f} ms   throughput {route_best:9.0f} req/s")
    print(f"ratio route/raw latency    {route_med / raw_med:.3f}x   (goal <= 1.2x)")
    print(f"ratio route/raw throughput {route_best / raw_best:.3f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per path (median latency)")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers (throughput)")
    parser.add_argument("--per-caller", type=int, default=100, help="calls per concurrent caller")
    asyncio.run(main(parser.parse_args()))
