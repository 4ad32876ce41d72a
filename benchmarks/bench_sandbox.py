"""Sandbox throughput: executions per second of ``SandboxedPythonCoder`` vs a plain subprocess (issue 8, item 5).

Three ways to run the same small program (``print(sum(i * i for i in range(1000)))``) N times, with the same
number of executions in flight:

1. baseline: ``asyncio.create_subprocess_exec(python3 -I -c code)`` from one process, no isolation;
2. engine:   ``forge.envs.sandbox.Sandbox.execute`` in one process (bubblewrap + rlimits + seccomp);
3. service:  ``SandboxedPythonCoder`` with 4 replicas (Monarch processes), ``coder.execute.route`` from the
             controller, each replica running one execution at a time.

The throughput ratios (service / baseline, engine / baseline; interleaved rounds, median) and the one-at-a-time
latencies are the price of isolation and of the actor hop.

    python benchmarks/bench_sandbox.py [--n 300] [--rounds 5] [--inflight 4] [--replicas 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

CODE = "print(sum(i * i for i in range(1000)))"
EXPECTED = f"{sum(i * i for i in range(1000))}\n"


async def _drive(run_one, n: int, inflight: int) -> float:
    """Run ``n`` executions with ``inflight`` at a time; returns executions per second. Checks every output."""
    sem = asyncio.Semaphore(inflight)

    async def one():
        async with sem:
            out = await run_one()
            assert out == EXPECTED, out

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


def baseline_runner():
    async def run_one():
        p = await asyncio.create_subprocess_exec("/usr/bin/python3", "-I", "-c", CODE,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        return out.decode()

    return run_one


def engine_runner(inflight: int):
    from forge.envs.sandbox import Sandbox, SandboxConfig

    sandbox = Sandbox(SandboxConfig(max_concurrency=inflight))

    async def run_one():
        return (await sandbox.execute(CODE)).stdout

    return run_one


async def start_service(inflight: int, replicas: int):
    from forge.actors.coder import SandboxedPythonCoder

    return await SandboxedPythonCoder.options(procs=1, with_gpus=False, num_replicas=replicas).as_service(
        max_concurrency=max(1, inflight // replicas))


async def main(args) -> None:
    from forge.actors.coder import SandboxedPythonCoder

    coder = await start_service(args.inflight, args.replicas)

    async def service_one():
        stdout, _ = await coder.execute.route(CODE)
        return stdout

    runners = {"baseline": baseline_runner(), "engine": engine_runner(args.inflight), "service": service_one}
    rates: dict[str, list[float]] = {k: [] for k in runners}
    try:
        # Interleaved rounds: the machine is shared, so each method sees the same background load per round.
        for _ in range(args.rounds):
            for name, run_one in runners.items():
                rates[name].append(await _drive(run_one, args.n // args.rounds, args.inflight))
        latency: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.latency_runs):  # one at a time: the latency a single caller sees
            for name, run_one in runners.items():
                t0 = time.perf_counter()
                await run_one()
                latency[name].append(time.perf_counter() - t0)
    finally:
        await SandboxedPythonCoder.shutdown(coder)
    med = {k: statistics.median(v) for k, v in rates.items()}
    lat = {k: 1000 * statistics.median(v) for k, v in latency.items()}
    ratio = {k: statistics.median([x / b for x, b in zip(rates[k], rates["baseline"])]) for k in rates}
    print(f"n={args.n} rounds={args.rounds} in_flight={args.inflight} replicas={args.replicas} program={CODE!r}")
    print(f"baseline plain subprocess : {med['baseline']:7.1f} exec/s (median of rounds)")
    print(f"sandbox engine (1 process): {med['engine']:7.1f} exec/s  ratio {ratio['engine']:.2f}x of baseline")
    print(f"SandboxedPythonCoder x{args.replicas}  : {med['service']:7.1f} exec/s  "
          f"ratio {ratio['service']:.2f}x of baseline (median of per-round ratios)")
    print(f"latency, one at a time (median ms): baseline {lat['baseline']:.1f}, engine {lat['engine']:.1f} "
          f"({lat['engine'] / lat['baseline']:.2f}x), service {lat['service']:.1f} "
          f"({lat['service'] / lat['baseline']:.2f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="timed executions per method (all rounds)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (baseline, engine, service)")
    parser.add_argument("--inflight", type=int, default=4, help="executions in flight at once")
    parser.add_argument("--replicas", type=int, default=4, help="SandboxedPythonCoder replicas")
    parser.add_argument("--latency-runs", type=int, default=30, help="sequential runs per method for latency")
    asyncio.run(main(parser.parse_args()))
