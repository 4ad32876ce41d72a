"""``SandboxedPythonCoder`` as a real Monarch service (issue 8): the seeds' call form, replicas, limits, errors."""

from __future__ import annotations

import asyncio

import psutil
import pytest

from forge.actors.coder import SandboxedPythonCoder
from forge.envs.sandbox import ExecutionResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_coder_service_seed_form_and_limits():
    coder = await SandboxedPythonCoder.options(procs=1, with_gpus=False, num_replicas=2).as_service(
        timeout_s=3.0, max_output_bytes=4096)
    try:
        # The seeds' form: `stdout, stderr = await coder.execute.route(code)`.
        stdout, stderr = await coder.execute.route("print(sum(range(101)))")
        assert (stdout, stderr) == ("5050\n", "")

        result = await coder.execute.route("import sys; x = int(input()); print(x * 7); sys.exit(3)",
                                           stdin="6\n")
        assert isinstance(result, ExecutionResult)
        assert (result.stdout, result.exit_code, result.timed_out) == ("42\n", 3, False)

        err = await coder.execute.route("1 / 0")
        assert err.exit_code == 1 and err.stderr.rstrip().endswith("ZeroDivisionError: division by zero")

        # Hostile code through the service: a result, not an exception; the replica stays usable.
        hang = await coder.execute.route("import time; time.sleep(30)", timeout=1.0)
        assert hang.timed_out and hang.duration_s < 3.0
        flood = await coder.execute.route("while True: print('z' * 100)")
        assert flood.truncated and len(flood.stdout) == 4096
        secret = await coder.execute.route("import os; print(sorted(os.environ))")
        assert secret.stdout.strip() == "['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONHASHSEED']"

        # A run longer than Monarch's 2 s supervision watchdog comes back normally.
        slow = await coder.execute.route("import time; time.sleep(2.5); print('slow')")
        assert slow.stdout == "slow\n" and 2.5 <= slow.duration_s < 3.0

        # Both replicas serve: 8 concurrent one-second sleeps finish well before 8 s.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        outs = await asyncio.gather(*(coder.execute.route(f"import time; time.sleep(1); print({i})")
                                      for i in range(8)))
        assert [o.stdout for o in outs] == [f"{i}\n" for i in range(8)]
        assert loop.time() - t0 < 6.0
        pids = set(await coder._forge_ping.fanout())
        assert len(pids) == 2
    finally:
        await SandboxedPythonCoder.shutdown(coder)
    # nothing of the replicas' sandboxes survives
    left = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "/sandbox/main.py" in p.info["cmdline"]]
    assert left == []


async def test_coder_refuses_without_isolation():
    with pytest.raises(Exception, match="bubblewrap cannot isolate"):
        await SandboxedPythonCoder.options(procs=1).as_actor(bwrap="/nonexistent/bwrap")
