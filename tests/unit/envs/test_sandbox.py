"""Unit tests of forge.envs.sandbox: config checks, the result record, the seccomp program, refusal and weak mode.

These run real bubblewrap (each run ~50 ms); the hostile corpus is tests/integration/test_sandbox_hostile.py.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from forge.envs.sandbox import (
    _DENIED_SYSCALLS_X86_64,
    KILLED_BY_FORGE,
    ExecutionResult,
    Sandbox,
    SandboxConfig,
    SandboxUnavailableError,
    seccomp_filter_x86_64,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxConfig(timeout_s=5.0))


def test_result_unpacks_like_the_seeds():
    r = ExecutionResult(stdout="out", stderr="err", exit_code=0, timed_out=False, truncated=False)
    stdout, stderr = r
    assert (stdout, stderr) == ("out", "err") and r.ok
    assert not ExecutionResult("", "", 0, True, False).ok and not ExecutionResult("", "", 1, False, False).ok


@pytest.mark.parametrize("field,value,msg", [("timeout_s", 0, "timeout_s must be > 0"),
                                             ("max_open_files", 8, "max_open_files must be >= 16"),
                                             ("memory_bytes", 1 << 20, "memory_bytes must be >= 64 MiB")])
def test_config_rejects_bad_limits(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        SandboxConfig(**{field: value})


def test_refuses_without_bubblewrap_unless_weak_mode_is_chosen():
    with pytest.raises(SandboxUnavailableError, match="bubblewrap cannot isolate.*allow_weak_isolation"):
        Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap"))
    weak = Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap", allow_weak_isolation=True, timeout_s=2.0))
    assert not weak.isolated
    r = weak.execute_sync("import os; print(sorted(os.environ)); print(7 * 6)")
    assert r.stdout.splitlines() == ["['HOME', 'LANG', 'PATH', 'PYTHONHASHSEED']", "42"] and not r.isolated
    hang = weak.execute_sync("while True: pass", timeout=0.5)
    assert hang.timed_out and hang.exit_code == KILLED_BY_FORGE


def test_rejects_venv_interpreter_and_missing_python():
    import sys

    with pytest.raises(ValueError, match="virtualenv interpreter"):
        Sandbox(SandboxConfig(python=sys.executable))
    with pytest.raises(ValueError, match="is not an executable"):
        Sandbox(SandboxConfig(python="/no/such/python"))


def test_seccomp_program_matches_an_independent_decoding():
    prog = seccomp_filter_x86_64()
    ins = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    denied = set(_DENIED_SYSCALLS_X86_64.values())

    def run(arch: int, nr: int) -> int:  # a tiny classic-BPF interpreter for the 4 opcodes used
        acc, pc = 0, 0
        while True:
            code, jt, jf, k = ins[pc]
            if code == 0x20:
                acc = arch if k == 4 else nr
                pc += 1
            elif code in (0x15, 0x35):
                hit = acc == k if code == 0x15 else acc >= k
                pc += 1 + (jt if hit else jf)
            else:
                return k

    assert run(0xC000003E, 0) == 0x7FFF0000  # read: allowed
    assert run(0xC000003E, 101) == 0x00050001  # ptrace: EPERM
    assert run(0xC000003E, 0x40000000 + 1) == 0x00050001  # x32 ABI: EPERM
    assert run(0x40000003, 0) == 0x80000000  # i386 ABI: kill
    allowed = [nr for nr in range(460) if run(0xC000003E, nr) == 0x7FFF0000]
    assert set(range(460)) - set(allowed) == denied


async def test_basic_run_stdin_exit_code_and_concurrency(sandbox):
    r = await sandbox.execute("import sys\nprint(sys.stdin.read().upper(), end='')\nsys.exit(4)", stdin="abc")
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out, r.truncated) == ("ABC", "", 4, False, False)
    e = await sandbox.execute("raise ValueError('boom')")
    assert e.exit_code == 1 and e.stderr.strip().endswith("ValueError: boom") and 'File "/sandbox/main.py"' in e.stderr
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    outs = await asyncio.gather(*(sandbox.execute(f"import time; time.sleep(0.5); print({i})") for i in range(4)))
    assert [o.stdout for o in outs] == ["0\n", "1\n", "2\n", "3\n"]
    assert loop.time() - t0 < 1.9  # max_concurrency=4: the four sleeps overlap


async def test_output_cap_is_exact():
    sb = Sandbox(SandboxConfig(max_output_bytes=1000))
    small = await sb.execute("print('x' * 998)")  # 999 bytes with the newline: under the cap
    assert small.stdout == "x" * 998 + "\n" and not small.truncated
    big = await sb.execute("import sys; sys.stdout.write('y' * 5000); sys.stdout.flush()")
    assert big.truncated and big.stdout == "y" * 1000 and big.exit_code == KILLED_BY_FORGE


def test_execute_sync_and_bad_arguments(sandbox):
    assert sandbox.execute_sync("print(2 ** 10)").stdout == "1024\n"
    with pytest.raises(TypeError, match="code must be a str"):
        sandbox.execute_sync(b"print(1)")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        sandbox.execute_sync("print(1)", timeout=0)


@pytest.mark.parametrize("launcher", ["prlimit", "python-bootstrap"])
def test_rlimits_are_applied_inside(monkeypatch, launcher):
    import forge.envs.sandbox as sbmod

    if launcher == "python-bootstrap":
        monkeypatch.setattr(sbmod, "PRLIMIT", "/nonexistent/prlimit")
    cfg = SandboxConfig(cpu_time_s=7, memory_bytes=300 << 20, max_processes=9, max_file_bytes=1 << 20,
                        max_open_files=33)
    r = Sandbox(cfg).execute_sync(
        "import resource as r\nfor n in ('CPU', 'AS', 'NPROC', 'FSIZE', 'NOFILE', 'CORE'):\n"
        "    print(n, *r.getrlimit(getattr(r, 'RLIMIT_' + n)))")
    assert r.stdout.splitlines() == ["CPU 7 8", f"AS {300 << 20} {300 << 20}", "NPROC 9 9",
                                     f"FSIZE {1 << 20} {1 << 20}", "NOFILE 33 33", "CORE 0 0"], r


@pytest.mark.parametrize("switch", ["setpriv", "popen-user"])
async def test_runs_as_unprivileged_host_uid_when_root(monkeypatch, switch):
    import os

    import psutil

    import forge.envs.sandbox as sbmod

    if os.geteuid() != 0:
        pytest.skip("the uid switch only happens when forge runs as root")
    if switch == "popen-user":
        monkeypatch.setattr(sbmod, "SETPRIV", "/nonexistent/setpriv")
    sb = Sandbox(SandboxConfig(sandbox_uid=65534))
    run = asyncio.ensure_future(sb.execute("import time; time.sleep(1.5)"))
    uids = []
    for _ in range(40):  # find the sandboxed program from the host side while it sleeps
        await asyncio.sleep(0.05)
        uids = [p.info["uids"].real for p in psutil.process_iter(["cmdline", "uids"])
                if p.info["cmdline"] and p.info["cmdline"][-1:] == ["/sandbox/main.py"]
                and psutil.Process().pid in [a.pid for a in p.parents()]]
        if uids:
            break
    assert (await run).exit_code == 0
    assert uids and set(uids) == {65534}, uids
