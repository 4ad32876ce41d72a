"""The hostile corpus (issue 8): untrusted programs against the real bubblewrap sandbox.

Every program runs in a real ``bwrap`` through ``forge.envs.sandbox.Sandbox``; each must come back as an
``ExecutionResult`` (never an exception), be contained (the check on its output says how), leave the host
unaffected (files, environment, this process), and leave no process behind (psutil snapshots before/after).

The whole corpus runs concurrently once (module fixture) so it stays well under a minute; each program then has its
own test id with its own check.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import pytest

from forge.envs.sandbox import KILLED_BY_FORGE, ExecutionResult, Sandbox, SandboxConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MARK = uuid.uuid4().hex[:10]
SECRET = f"forge-secret-{uuid.uuid4().hex}"
HOST_DIR = f"/tmp/forge-hostile-{MARK}"  # a host directory with a planted secret file
CFG = SandboxConfig(timeout_s=4.0, cpu_time_s=3, memory_bytes=256 << 20, max_processes=12,
                    max_output_bytes=16 << 10, tmp_bytes=8 << 20, max_file_bytes=4 << 20, max_concurrency=6)
SANDBOX_UID = CFG.sandbox_uid


@dataclass
class Case:
    name: str
    code: str
    check: Callable[[ExecutionResult], None]
    timeout: float | None = None
    stdin: str | None = None


def _lines(r: ExecutionResult) -> dict[str, str]:
    """Parse `key=value` lines the programs print."""
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def _all_denied(r: ExecutionResult) -> None:
    kv = _lines(r)
    assert r.exit_code == 0, r.stderr
    assert kv and all(v.startswith("denied") for v in kv.values()), kv


# Each program tries things and prints `what=ok` or `what=denied:<Error>`; the helper below is prepended.
TRY = """
def attempt(what, fn):
    try:
        out = fn()
        print(f"{what}=ok:{str(out)[:80]!r}", flush=True)
    except BaseException as e:
        print(f"{what}=denied:{type(e).__name__}", flush=True)
"""


def _c(body: str) -> str:
    return TRY + body


def _check_write_outside(r):
    _all_denied(r)
    assert not os.path.exists(f"/usr/forge-{MARK}") and not os.path.exists(f"/forge-{MARK}")


def _check_private_tmp(r):
    assert r.exit_code == 0 and "inside=ok" in r.stdout, r.stdout + r.stderr
    assert not os.path.exists(f"/tmp/forge-escape-{MARK}")  # the sandbox's /tmp is not the host's


def _check_env(r):
    assert r.exit_code == 0, r.stderr
    assert SECRET not in r.stdout and "FORGE_TEST_SECRET" not in r.stdout
    env = eval(r.stdout.splitlines()[0])  # the program printed dict(os.environ)
    assert set(env) <= {"PATH", "LANG", "HOME", "PYTHONHASHSEED", "PWD", "LC_CTYPE"}, env


def _check_proc_scan(r):
    assert r.exit_code == 0, r.stderr
    pids = eval(r.stdout.splitlines()[0])
    assert len(pids) <= 4, pids  # bwrap's init, the program (and its ctypes helpers): never the host's
    assert "pytest" not in r.stdout and str(os.getpid()) not in pids


def _check_fork_bomb(r):
    assert r.timed_out or r.exit_code is not None
    assert "forks=" in r.stdout and int(_lines(r)["forks"]) < CFG.max_processes, r.stdout


def _check_mem(r):
    assert _lines(r).get("alloc", "").startswith("denied:MemoryError"), r.stdout + r.stderr


def _check_timeout(r):
    assert r.timed_out and r.exit_code == KILLED_BY_FORGE and r.duration_s < 1.5 + 3.0, r


def _check_cpu_limit(r):
    # RLIMIT_CPU (3 s) fires before the 20 s wall clock: SIGXCPU -> 128 + 24.
    assert not r.timed_out and r.exit_code in (128 + 24, 128 + 9), r


def _check_truncated(r):
    assert r.truncated and not r.timed_out and r.exit_code == KILLED_BY_FORGE, r
    # at most max_output_bytes bytes were kept; decoding turns each into at most one character
    assert len(r.stdout) <= CFG.max_output_bytes and len(r.stderr) <= CFG.max_output_bytes


def _check_quick_exit(r):
    assert r.exit_code == 0 and not r.timed_out and r.duration_s < 3.0, r


def _check_many_files(r):
    _check_quick_exit(r)
    assert "files=" in r.stdout and not os.path.exists("/tmp/f19999")  # created in the sandbox's /tmp only


def _check_survives_kill_attempts(r):
    # kill(-1) reaches only the sandbox's own processes; the namespace's init ignores signals from inside.
    assert r.exit_code == 0 and "still-here" in r.stdout, r


def _check_segv(r):
    assert r.exit_code == 128 + 11 and not r.timed_out, r


CASES = [
    Case("write_outside_tmp", _c(f"""
for p in ["/usr/forge-{MARK}", "/forge-{MARK}", "/etc/forge", "/proc/forge", "/sandbox/x", "/dev/forge"]:
    attempt(p, lambda: open(p, "w").write("x"))
"""), _check_write_outside),
    Case("overwrite_own_program", _c("attempt('self', lambda: open('/sandbox/main.py', 'a').write('x'))"),
         _all_denied),
    Case("private_tmp_not_host_tmp", _c(f"attempt('inside', lambda: open('/tmp/forge-escape-{MARK}', 'w').write('x'))"),
         _check_private_tmp),
    Case("read_shadow_passwd", _c("""
for p in ["/etc/shadow", "/etc/passwd", "/etc/hosts", "/etc/ssh/ssh_host_rsa_key"]:
    attempt(p, lambda: open(p).read())
"""), _all_denied),
    Case("read_host_files", _c(f"""
for p in ["{HOST_DIR}/secret.txt", "/work/main/pyproject.toml", "/root/.bashrc", "/root/.ssh/id_rsa",
          "/home", "{os.path.realpath(os.__file__)}", "/var/log/syslog", "/sys/kernel/notes"]:
    attempt(p, lambda: open(p).read() if "." in p.rsplit("/", 1)[-1] else __import__("os").listdir(p))
"""), _all_denied),
    Case("import_project_packages", _c("""
for m in ["forge", "torch", "monarch", "psutil"]:
    attempt(m, lambda: __import__(m))
"""), _all_denied),
    Case("parent_environment", """
import os
print(dict(os.environ))
print(open('/proc/self/environ').read()); print(open('/proc/1/environ', 'rb').read())
print(open('/proc/1/cmdline', 'rb').read())
""", _check_env),
    Case("proc_scan_host_processes", """
import os
pids = [p for p in os.listdir('/proc') if p.isdigit()]
print(pids)
for p in pids:
    try: print(open(f'/proc/{p}/cmdline', 'rb').read())
    except OSError: pass
""", _check_proc_scan),
    Case("proc_tricks", _c("""
attempt("sysrq", lambda: open("/proc/sysrq-trigger", "w").write("b"))
attempt("kcore", lambda: open("/proc/kcore", "rb").read(16))
attempt("core_pattern", lambda: open("/proc/sys/kernel/core_pattern", "w").write("|/tmp/x"))
attempt("root_escape", lambda: open("/proc/1/root/etc/shadow").read())
attempt("mem_of_init", lambda: open("/proc/1/mem", "rb").read(16))
"""), _all_denied),
    Case("devices", _c("""
for d in ["/dev/mem", "/dev/kmsg", "/dev/sda", "/dev/vda", "/dev/port"]:
    attempt(d, lambda: open(d, "rb").read(1))
"""), _all_denied),
    Case("sockets_network", _c("""
import socket
def tcp(addr):
    s = socket.socket(); s.settimeout(1); s.connect(addr)
attempt("tcp_internet", lambda: tcp(("1.1.1.1", 53)))
attempt("tcp_host_loopback", lambda: tcp(("127.0.0.1", HOST_PORT)))
attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443))
def abstract():
    s = socket.socket(socket.AF_UNIX); s.connect("\\0" + ABSTRACT)
attempt("abstract_unix", abstract)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("8.8.8.8", 53))
attempt("udp_internet", udp)
attempt("raw_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
"""), _all_denied),
    Case("fork_bomb", """
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except OSError:
    pass
print(f"forks={n}", flush=True)
""", _check_fork_bomb),
    Case("thread_bomb", _c("""
import threading, time
def spawn():
    n = 0
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start(); n += 1
attempt("threads", spawn)
"""), _all_denied),
    Case("memory_bomb_one_block", _c("attempt('alloc', lambda: bytearray(2 << 30))"), _check_mem),
    Case("memory_bomb_growing", _c("""
def grow():
    xs = []
    while True: xs.append(bytearray(16 << 20))
attempt('alloc', grow)
"""), _check_mem),
    Case("cpu_spin", "while True: pass", _check_timeout, timeout=1.5),
    Case("cpu_spin_ignoring_signals", """
import signal
for s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True: pass
""", _check_cpu_limit, timeout=20.0),
    Case("unbounded_stdout", "while True: print('y' * 4096)", _check_truncated),
    Case("unbounded_stderr_binary", "import os\nwhile True: os.write(2, bytes(range(256)) * 64)",
         _check_truncated),
    Case("sleep_past_timeout", "import time; time.sleep(60)", _check_timeout, timeout=1.5),
    Case("kill_the_parent", """
import os, signal
for target in (os.getppid(), 1, -1):
    try: os.kill(target, signal.SIGKILL)
    except OSError as e: print("kill", target, type(e).__name__)
print("still-here")
""", _check_survives_kill_attempts),
    Case("ptrace_and_process_vm", _c("""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def sc(*a):
    if libc.syscall(*a) == -1: raise OSError(ctypes.get_errno(), "syscall")
attempt("ptrace_attach_init", lambda: sc(101, 16, 1, 0, 0))
attempt("ptrace_traceme", lambda: sc(101, 0, 0, 0, 0))
attempt("process_vm_readv", lambda: sc(310, 1, 0, 0, 0, 0, 0))
"""), _all_denied),
    Case("setuid_and_capabilities", _c("""
import os, subprocess
attempt("setuid0", lambda: os.setuid(0))
attempt("setgid0", lambda: os.setgid(0))
def su():
    p = subprocess.run(["/usr/bin/su", "-c", "id"], capture_output=True, input=b"", timeout=3)
    if p.returncode != 0: raise PermissionError(p.stderr[:60])
attempt("su", su)
def caps():
    st = open("/proc/self/status").read()
    eff = [l for l in st.splitlines() if l.startswith("CapEff")][0].split()[1]
    if int(eff, 16) == 0: raise PermissionError("no capabilities")
attempt("caps", caps)
"""), _all_denied),
    Case("raw_syscalls_ctypes", _c("""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def sc(*a):
    if libc.syscall(*a) == -1: raise OSError(ctypes.get_errno(), "syscall")
attempt("mount", lambda: sc(165, b"none", b"/tmp", b"tmpfs", 0, 0))
attempt("unshare_userns", lambda: sc(272, 0x10000000))
attempt("unshare_netns", lambda: sc(272, 0x40000000))
attempt("reboot", lambda: sc(169, 0xfee1dead, 672274793, 0x4321fedc, 0))
attempt("keyctl", lambda: sc(250, 0, 0, 0, 0))
attempt("bpf", lambda: sc(321, 0, 0, 0))
attempt("chroot", lambda: sc(161, b"/tmp"))
attempt("sethostname", lambda: sc(170, b"evil", 4))
attempt("settimeofday", lambda: sc(164, 0, 0))
attempt("io_uring", lambda: sc(425, 1, 0))
"""), _all_denied),
    Case("fill_the_disk", _c("""
def fill(path):
    with open(path, "wb") as f:
        while True: f.write(b"z" * (1 << 20)); f.flush()
attempt("tmp", lambda: fill("/tmp/big"))
attempt("shm", lambda: fill("/dev/shm/big"))
"""), _all_denied),
    Case("thousands_of_files", """
import os
n = 0
try:
    for i in range(20000):
        open(f"/tmp/f{i}", "w").close(); n += 1
except OSError as e:
    print("stopped", type(e).__name__)
print(f"files={n}")
""", _check_many_files),
    Case("open_file_descriptors", _c("""
def many():
    fds = []
    while True: fds.append(open("/dev/null"))
attempt("fds", many)
"""), _all_denied),
    Case("background_daemon_double_fork", """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(120); os._exit(0)
    os._exit(0)
print("parent exits")
""", _check_quick_exit),
    Case("background_subprocess", """
import subprocess
subprocess.Popen(["/usr/bin/sleep", "120"], start_new_session=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
print("left a sleeper")
""", _check_quick_exit),
    Case("segfault_ctypes", "import ctypes; ctypes.string_at(0)", _check_segv),
    Case("symlink_escape", _c("""
import os
os.symlink("/etc/shadow", "/tmp/s"); os.symlink("/proc/1/root", "/tmp/r")
attempt("via_symlink", lambda: open("/tmp/s").read())
attempt("via_proc_root", lambda: open("/tmp/r/etc/passwd").read())
"""), _all_denied),
    Case("close_std_streams_then_spin", "import os\nos.close(1); os.close(2)\nwhile True: pass", _check_timeout,
         timeout=1.5),
    Case("raise_own_rlimits", _c("""
import resource
for n in ("NPROC", "AS", "CPU", "NOFILE"):
    attempt(n, lambda: resource.setrlimit(getattr(resource, "RLIMIT_" + n),
                                          (resource.RLIM_INFINITY, resource.RLIM_INFINITY)))
"""), _all_denied),
    Case("huge_stdin_ignored", "print('ignored stdin')", _check_quick_exit, stdin="q" * (4 << 20)),
]


@pytest.fixture(scope="module")
def corpus():
    """Run every case concurrently in the real sandbox; yield (results, process snapshots, host facts)."""
    os.makedirs(HOST_DIR, exist_ok=True)
    with open(f"{HOST_DIR}/secret.txt", "w") as f:
        f.write(SECRET)
    os.environ["FORGE_TEST_SECRET"] = SECRET
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX)
    abstract_name = f"forge-test-{MARK}"
    abstract.bind("\0" + abstract_name)
    abstract.listen(4)
    abstract.setblocking(False)
    port = listener.getsockname()[1]
    before = {p.pid for p in psutil.process_iter()}
    disk_before = shutil.disk_usage("/").free
    sandbox = Sandbox(CFG)

    async def run_all():
        async def one(case: Case):
            code = case.code.replace("HOST_PORT", str(port)).replace("ABSTRACT", repr(abstract_name))
            return await sandbox.execute(code, stdin=case.stdin, timeout=case.timeout)
        return await asyncio.gather(*(one(c) for c in CASES))

    start = time.monotonic()
    try:
        results = dict(zip([c.name for c in CASES], asyncio.run(run_all())))
    finally:
        os.environ.pop("FORGE_TEST_SECRET", None)
    elapsed = time.monotonic() - start
    accepted = []
    for sock in (listener, abstract):
        try:
            accepted.append(sock.accept())
        except BlockingIOError:
            pass
    listener.close()
    abstract.close()
    yield {"results": results, "before": before, "elapsed": elapsed, "accepted": accepted,
           "disk_before": disk_before}
    shutil.rmtree(HOST_DIR, ignore_errors=True)


def test_corpus_is_large_enough():
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_program_is_contained(corpus, case):
    result = corpus["results"][case.name]
    assert isinstance(result, ExecutionResult) and result.isolated
    case.check(result)


def test_corpus_runs_fast(corpus):
    assert corpus["elapsed"] < 60, corpus["elapsed"]


def test_host_unaffected(corpus):
    assert corpus["accepted"] == []  # nothing reached the host's loopback or abstract sockets
    with open(f"{HOST_DIR}/secret.txt") as f:
        assert f.read() == SECRET
    assert not os.path.exists(f"/tmp/forge-escape-{MARK}")
    assert corpus["disk_before"] - shutil.disk_usage("/").free < 256 << 20  # disk filling stayed in tmpfs


def test_no_process_left_behind(corpus):
    """No process of the sandbox uid and no child of this test process survives the corpus."""
    deadline = time.monotonic() + 5
    while True:
        me = psutil.Process()
        children = me.children(recursive=True)
        sandboxed = [p for p in psutil.process_iter(["uids", "cmdline"])
                     if p.pid not in corpus["before"] and p.info["uids"] and p.info["uids"].real == SANDBOX_UID]
        if not children and not sandboxed:
            break
        assert time.monotonic() < deadline, (children, [(p.pid, p.info["cmdline"]) for p in sandboxed])
        time.sleep(0.2)


def test_concurrent_sandboxes_do_not_share_tmp():
    """Two runs at the same time: what one writes to /tmp and /dev/shm, the other cannot see."""
    writer = f"""
import time
open("/tmp/forge-cross-{MARK}", "w").write("secret"); open("/dev/shm/forge-cross-{MARK}", "w").write("s")
print("written", flush=True)
time.sleep(2.0)
"""
    reader = _c(f"""
import time
time.sleep(1.0)  # the writer started at the same time and has written by now
attempt("tmp", lambda: open("/tmp/forge-cross-{MARK}").read())
attempt("shm", lambda: open("/dev/shm/forge-cross-{MARK}").read())
""")
    sandbox = Sandbox(CFG)

    async def both():
        return await asyncio.gather(sandbox.execute(writer), sandbox.execute(reader))

    t0 = time.monotonic()
    w, r = asyncio.run(both())
    elapsed = time.monotonic() - t0
    assert w.stdout == "written\n" and w.exit_code == 0
    _all_denied(r)
    assert elapsed < w.duration_s + r.duration_s - 0.5  # they did overlap in time


def test_timeout_during_sandbox_setup_kills_everything():
    """A timeout that fires while bwrap is still setting up must neither hang nor orphan the program.

    Before the sandbox's init was killed directly (its pid from --info-fd), SIGKILLing bwrap before it armed
    --die-with-parent left the program running with our pipes open: CI hung for 180 s on 1.5 s timeouts under
    load, and 0.003 s timeouts reproduced it here in 4 runs of 6."""
    sandbox = Sandbox(CFG)
    before = {p.pid for p in psutil.process_iter()}

    async def many():
        runs = [sandbox.execute("import time; time.sleep(30)", timeout=t)
                for t in (0.002, 0.003, 0.004, 0.005) * 15 + (0.01, 0.05, 0.2)]
        return await asyncio.wait_for(asyncio.gather(*runs), timeout=30)

    t0 = time.monotonic()
    results = asyncio.run(many())
    assert time.monotonic() - t0 < 30
    assert all(r.timed_out and r.exit_code == KILLED_BY_FORGE for r in results)
    time.sleep(0.5)
    alive = [(p.pid, p.info["cmdline"]) for p in psutil.process_iter(["uids", "cmdline", "status"])
             if p.pid not in before and p.info["uids"] and p.info["uids"].real == SANDBOX_UID
             and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert alive == []
