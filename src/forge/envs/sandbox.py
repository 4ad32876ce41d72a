"""Run untrusted Python in a bubblewrap sandbox: the engine behind ``forge.actors.coder.SandboxedPythonCoder``.

Model-written code is hostile input (issue 8). Every ``Sandbox.execute`` starts a fresh ``bwrap`` (Debian
``bubblewrap``) container, runs one program in it with a system Python, and returns an ``ExecutionResult``; hostile
code gets a result, never an exception. Plain Python, no Monarch: testable in one process.

Threat model
------------
Assumed attacker: the Python source handed to ``execute`` (and its stdin), written by a model or a user who wants
to read host data, reach the network, persist, escape, or take the host down.

Covered (each has a program in ``tests/integration/test_sandbox_hostile.py``):
  * Filesystem: the sandbox's root is an empty tmpfs, remounted read-only. Only ``/usr`` (plus the ``/lib*``,
    ``/bin`` links of a merged-/usr system) and the interpreter's prefix are bound, read-only. No host ``/etc``,
    ``/home``, ``/root``, ``/work``, project tree, venv, or secrets. The only writable places are a private
    ``/tmp`` and ``/dev/shm``, tmpfs mounts with a byte cap (``tmp_bytes``) that vanish with the run.
  * Environment: ``--clearenv``; the program sees only ``PATH``, ``LANG``, ``HOME=/tmp``, ``PYTHONHASHSEED``.
  * Network: a new network namespace with only a down-then-up loopback; no route to the host or beyond.
  * Processes: new pid, ipc, uts, cgroup and user namespaces; the program cannot see or signal host processes
    (killing "the parent" only reaches the sandbox's own init). When the program's main process exits, the
    namespace's init exits and the kernel kills every process left inside (no daemons survive). A wall-clock
    timeout SIGKILLs the namespace's init (its host pid comes from bwrap's ``--info-fd``), then the bwrap
    process group; ``--die-with-parent`` tears the sandbox down if the host-side process dies.
  * Privileges: all capabilities dropped, ``no_new_privs`` (setuid binaries do not elevate), no nested user
    namespaces (``--disable-userns``), a new session (no TIOCSTI into the caller's terminal). When forge runs as
    root, bwrap itself is started as an unprivileged host uid (``sandbox_uid``), so even a namespace escape lands
    on an unprivileged account and ``RLIMIT_NPROC`` is enforced (the kernel exempts uid 0 from it).
  * Syscalls (x86_64): a seccomp filter returns EPERM for ptrace, process_vm_*, keyctl, bpf, perf_event_open,
    userfaultfd, io_uring, mount/namespace/module/kexec calls and other kernel attack surface unneeded by Python.
  * Resources, set inside the sandbox before the program starts: CPU seconds (RLIMIT_CPU), address space
    (RLIMIT_AS), processes (RLIMIT_NPROC, counted per sandbox's user namespace), file size (RLIMIT_FSIZE), open
    files (RLIMIT_NOFILE), no core dumps; stdout/stderr read incrementally and capped (the run is killed at the
    cap and the result marked ``truncated``).

Not covered (use a VM, gVisor or a dedicated host when these matter):
  * Kernel vulnerabilities: the sandbox shares the host kernel; seccomp narrows, not removes, the attack surface.
  * Side channels (Spectre-class, cache timing) and covert channels between concurrent runs (CPU load, timing).
  * Aggregate resource use: limits are per process (RLIMIT_AS) or per sandbox (NPROC); one run may hold up to
    ``max_processes * memory_bytes`` of memory plus ``tmp_bytes`` of tmpfs and kernel memory (pipes, sockets) not
    counted by RLIMIT_AS. There is no cgroup: CPU contention between runs is only bounded by the timeouts.
  * Information in ``/usr`` (installed software, its versions and any data under ``/usr/local``) and in
    ``/proc`` (kernel version, CPU model, memory size, uptime) is readable.
  * The weak mode (``allow_weak_isolation=True``, used only when bubblewrap cannot isolate) keeps the rlimits,
    the cleared environment, the private working directory and the timeout, but has NO filesystem, network or
    process isolation: trusted code only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

SANDBOX_DIR = "/sandbox"  # where the program file is placed (read-only) inside the sandbox
PROGRAM_PATH = f"{SANDBOX_DIR}/main.py"
KILLED_BY_FORGE = -9  # exit_code when forge killed the run (timeout or output cap)
logger = logging.getLogger(__name__)


class SandboxUnavailableError(RuntimeError):
    """bubblewrap cannot isolate on this host and the weak mode was not explicitly allowed."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation of one sandboxed execution (see the module docstring for the threat model)."""

    python: str = "/usr/bin/python3"  # interpreter run inside the sandbox: a system Python, never a project venv
    bwrap: str = "bwrap"  # bubblewrap executable (name on PATH or absolute path)
    timeout_s: float = 10.0  # wall-clock limit per run; execute(timeout=...) overrides it per call
    cpu_time_s: int = 10  # RLIMIT_CPU: CPU seconds per process (SIGXCPU, then SIGKILL)
    memory_bytes: int = 512 << 20  # RLIMIT_AS: address space per process
    max_processes: int = 16  # RLIMIT_NPROC: processes + threads inside one sandbox
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE: largest file the program may write
    max_open_files: int = 64  # RLIMIT_NOFILE: open file descriptors per process
    tmp_bytes: int = 64 << 20  # size cap of the private /tmp (and of /dev/shm) tmpfs
    max_output_bytes: int = 64 << 10  # cap per stream (stdout, stderr); reaching it kills the run
    max_concurrency: int = 4  # runs one Sandbox object executes at once (others wait)
    sandbox_uid: int = 65534  # host uid bwrap runs as when forge runs as root (nobody)
    seccomp: bool = True  # install the syscall deny-list (x86_64 only; ignored elsewhere)
    allow_weak_isolation: bool = False  # opt-in: without working bubblewrap, run with rlimits only (trusted code!)

    def __post_init__(self):
        for name in ("timeout_s", "cpu_time_s", "memory_bytes", "max_processes", "max_file_bytes",
                     "max_open_files", "tmp_bytes", "max_output_bytes", "max_concurrency"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"SandboxConfig.{name} must be > 0, got {value!r}")
        if self.max_open_files < 16:
            raise ValueError(f"SandboxConfig.max_open_files must be >= 16 (Python needs a few), got "
                             f"{self.max_open_files}")
        if self.memory_bytes < 64 << 20:
            raise ValueError(f"SandboxConfig.memory_bytes must be >= 64 MiB for Python to start, got "
                             f"{self.memory_bytes}")


@dataclass(frozen=True)
class ExecutionResult:
    """What one run produced. Unpacks as ``stdout, stderr = result`` (the seeds' form).

    ``exit_code``: the program's exit status; 128 + N when a signal N killed it inside the sandbox (as a shell
    reports it; e.g. 152 = SIGXCPU from the CPU limit; -N in the weak mode, as Python reports it);
    ``KILLED_BY_FORGE`` (-9) when forge killed the run because of the wall-clock timeout (``timed_out``) or the
    output cap (``truncated``).
    """

    stdout: str  # decoded UTF-8 (invalid bytes replaced), at most max_output_bytes
    stderr: str  # same for stderr
    exit_code: int  # see the class docstring
    timed_out: bool  # the wall-clock timeout fired
    truncated: bool  # stdout or stderr reached max_output_bytes (the run was stopped there)
    duration_s: float = 0.0  # wall-clock seconds of the run, sandbox start included
    isolated: bool = True  # False only in the opt-in weak mode (no bubblewrap)

    def __iter__(self):
        # `stdout, stderr = await coder.execute.route(code)` as in the seeds.
        yield self.stdout
        yield self.stderr

    @property
    def ok(self) -> bool:
        """The program exited 0 within its limits."""
        return self.exit_code == 0 and not self.timed_out and not self.truncated


# --- seccomp -----------------------------------------------------------------------------------------------------
# x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl) that untrusted Python never needs and that are
# the usual kernel attack surface (the list follows flatpak's and Docker's default profiles).
_DENIED_SYSCALLS_X86_64 = {
    "ptrace": 101, "syslog": 103, "personality": 135, "pivot_root": 155, "acct": 163, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170, "setdomainname": 171,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000


def seccomp_filter_x86_64() -> bytes:
    """A classic-BPF seccomp program (``struct sock_filter[]``) for bwrap's ``--seccomp FD``.

    Kills the process on a foreign architecture ABI, returns EPERM for x32 syscalls and the deny-list, allows
    the rest.
    """
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    ret_allow, ret_kill, ret_eperm = 0x7FFF0000, 0x80000000, 0x00050000 | 1
    denied = sorted(_DENIED_SYSCALLS_X86_64.values())
    prog: list[tuple[int, int, int, int]] = [(ld_abs, 0, 0, 4), (jeq, 1, 0, _AUDIT_ARCH_X86_64),
                                            (ret, 0, 0, ret_kill), (ld_abs, 0, 0, 0)]
    deny_at = len(prog) + 1 + len(denied) + 1  # index of the final "return EPERM"
    prog.append((jge, deny_at - len(prog) - 1, 0, _X32_SYSCALL_BIT))
    for nr in denied:
        prog.append((jeq, deny_at - len(prog) - 1, 0, nr))
    prog += [(ret, 0, 0, ret_allow), (ret, 0, 0, ret_eperm)]
    assert len(prog) == deny_at + 1
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in prog)


# --- what runs first inside the sandbox: set rlimits, then exec the user's program ------------------------------
# Limits are set *inside* the new user namespace so that RLIMIT_NPROC counts this sandbox's processes only
# (the kernel keys the count by user namespace); set on bwrap itself it would be shared by concurrent runs.
# util-linux's prlimit does it in ~1 ms; without it, a Python bootstrap does the same (one more interpreter start).
PRLIMIT = "/usr/bin/prlimit"
SETPRIV = "/usr/bin/setpriv"  # util-linux; drops root to sandbox_uid before bwrap (see Sandbox._as_sandbox_user)
_BOOTSTRAP = """\
import os, resource, sys
for name, value in zip(("CPU", "AS", "NPROC", "FSIZE", "NOFILE", "CORE"), map(int, sys.argv[1:7])):
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value + (name == "CPU")))
os.execv(sys.executable, [sys.executable, "-I", "-X", "utf8", sys.argv[7]])
"""


def _limited_command(cfg: SandboxConfig, python: str, program: str) -> list[str]:
    """argv that applies the rlimits to itself, then runs ``python -I program``.

    The hard CPU limit is one second above the soft one: SIGXCPU first, SIGKILL if the program ignores it.
    """
    if os.access(PRLIMIT, os.X_OK):
        return [PRLIMIT, f"--cpu={cfg.cpu_time_s}:{cfg.cpu_time_s + 1}", f"--as={cfg.memory_bytes}",
                f"--nproc={cfg.max_processes}", f"--fsize={cfg.max_file_bytes}", f"--nofile={cfg.max_open_files}",
                "--core=0", python, "-I", "-X", "utf8", program]
    limits = [str(v) for v in (cfg.cpu_time_s, cfg.memory_bytes, cfg.max_processes, cfg.max_file_bytes,
                               cfg.max_open_files, 0)]
    return [python, "-I", "-S", "-c", _BOOTSTRAP, *limits, program]


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _host_root_binds(python: str) -> list[str]:
    """Read-only binds of /usr, the /lib* and /bin links (or dirs), and the interpreter's prefix."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = str(Path(os.path.realpath(python)).parent.parent)
    if prefix not in ("/usr", "/") and not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    return args


class Sandbox:
    """Executes untrusted Python programs in bubblewrap, ``max_concurrency`` at a time.

    ``await Sandbox(cfg).execute(code, stdin=None, timeout=None) -> ExecutionResult``. Construction checks that
    bubblewrap isolates on this host (one probe run) and raises ``SandboxUnavailableError`` if not, unless
    ``cfg.allow_weak_isolation``.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = cfg = config or SandboxConfig()
        self._python = self._check_python(cfg.python)
        self._as_root = os.geteuid() == 0
        self._seccomp = seccomp_filter_x86_64() if cfg.seccomp and platform.machine() == "x86_64" else None
        # One semaphore per event loop: asyncio primitives are bound to the loop that first uses them, and a
        # Sandbox may serve several loops (e.g. a sync grader that runs each call in asyncio.run).
        self._semaphores: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        problem = self._probe_bwrap()
        self.isolated = problem is None
        if problem is not None and not cfg.allow_weak_isolation:
            raise SandboxUnavailableError(
                f"bubblewrap cannot isolate untrusted code on this host: {problem}. Install bubblewrap "
                "(apt-get install bubblewrap) and allow unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces>0), or, for trusted code "
                "only, set SandboxConfig(allow_weak_isolation=True) to run with rlimits but no isolation.")

    @staticmethod
    def _check_python(python: str) -> str:
        path = shutil.which(python)
        if path is None:
            raise ValueError(f"SandboxConfig.python={python!r} is not an executable; give a system interpreter "
                             "such as /usr/bin/python3")
        # A venv's bin/python is usually a symlink to the base interpreter: look next to the link, not its target.
        if any((Path(p).parent.parent / "pyvenv.cfg").exists() for p in (path, os.path.realpath(path))):
            raise ValueError(f"SandboxConfig.python={python!r} is a virtualenv interpreter: binding its prefix "
                             "would expose the project's packages; give the base interpreter (sys._base_executable)"
                             " or /usr/bin/python3")
        return os.path.realpath(path)

    def _probe_bwrap(self) -> str | None:
        """None if a minimal isolated run works, else why not."""
        if shutil.which(self.config.bwrap) is None:
            return f"{self.config.bwrap!r} not found"
        argv = self._bwrap_argv(code_fd=None, seccomp_fd=None, probe=True)
        try:
            proc = subprocess.run(self._as_sandbox_user(argv), capture_output=True, timeout=30, check=False,
                                  **self._spawn_user_kwargs())
        except (OSError, subprocess.SubprocessError) as e:
            return f"{' '.join(argv[:3])}... failed to start: {e}"
        if proc.returncode != 0 or proc.stdout.strip() != b"ok":
            return f"probe exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[:500]}"
        return None

    def _spawn_user_kwargs(self) -> dict:
        # bwrap itself gets an empty environment: its init process (pid 1 in the sandbox) is readable through
        # /proc/1/environ from inside, and --clearenv only clears the program's (found by the hostile corpus).
        kwargs = {"env": {"PATH": "/usr/bin:/bin"}}
        if self._as_root and not os.access(SETPRIV, os.X_OK):
            uid = self.config.sandbox_uid
            kwargs.update(user=uid, group=uid, extra_groups=[])
        return kwargs

    def _as_sandbox_user(self, argv: list[str]) -> list[str]:
        """As root, drop to ``sandbox_uid`` before bwrap starts. util-linux's setpriv does it after exec, so that
        CPython can spawn with vfork: Popen(user=...) forces a full fork(), ~55 ms in a process that holds torch
        (measured here) against ~1 ms."""
        if not self._as_root or not os.access(SETPRIV, os.X_OK):
            return argv
        uid = self.config.sandbox_uid
        return [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]

    def _bwrap_argv(self, code_fd: int | None, seccomp_fd: int | None, probe: bool = False,
                    info_fd: int | None = None) -> list[str]:
        cfg = self.config
        argv = [cfg.bwrap] + (["--info-fd", str(info_fd)] if info_fd is not None else []) + ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", "65534", "--gid",
                "65534", "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv",
                "HOME", "/tmp", "--setenv", "PYTHONHASHSEED", "0"]
        argv += _host_root_binds(self._python)
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(cfg.tmp_bytes), "--tmpfs", "/dev/shm",
                 "--size", str(cfg.tmp_bytes), "--tmpfs", "/tmp"]
        if code_fd is not None:
            argv += ["--perms", "0444", "--ro-bind-data", str(code_fd), PROGRAM_PATH]
        argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
        if seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        if probe:
            return argv + ["--", self._python, "-I", "-S", "-c", "print('ok')"]
        return argv + ["--", *_limited_command(cfg, self._python, PROGRAM_PATH)]

    async def execute(self, code: str, stdin: str | bytes | None = None,
                      timeout: float | None = None) -> ExecutionResult:
        """Run ``code`` as ``python main.py`` in a fresh sandbox; never raises for anything the code does."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str of Python source, got {type(code).__name__}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds (or None for the config's "
                             f"{self.config.timeout_s}), got {timeout!r}")
        loop = asyncio.get_running_loop()
        if loop not in self._semaphores:
            self._semaphores[loop] = asyncio.Semaphore(self.config.max_concurrency)
        stdin_bytes = stdin.encode() if isinstance(stdin, str) else stdin
        async with self._semaphores[loop]:
            if self.isolated:
                return await self._run_bwrap(code, stdin_bytes, timeout or self.config.timeout_s)
            return await self._run_weak(code, stdin_bytes, timeout or self.config.timeout_s)

    def execute_sync(self, code: str, stdin: str | bytes | None = None,
                     timeout: float | None = None) -> ExecutionResult:
        """``execute`` for callers without an event loop."""
        return asyncio.run(self.execute(code, stdin=stdin, timeout=timeout))

    async def _run_bwrap(self, code: str, stdin: bytes | None, timeout: float) -> ExecutionResult:
        fds = [_memfd("forge-program", code.encode())]
        if self._seccomp is not None:
            fds.append(_memfd("forge-seccomp", self._seccomp))
        info_read, info_write = os.pipe()
        fds.append(info_write)
        argv = self._as_sandbox_user(self._bwrap_argv(fds[0], fds[1] if self._seccomp is not None else None,
                                                      info_fd=info_write))
        # _supervise owns the fds from here: it closes our copies once the child holds its own.
        return await _supervise(argv, stdin, timeout, self.config.max_output_bytes, pass_fds=tuple(fds),
                                cwd="/", isolated=True, info_fd=info_read, **self._spawn_user_kwargs())

    async def _run_weak(self, code: str, stdin: bytes | None, timeout: float) -> ExecutionResult:
        # Opt-in fallback without bubblewrap: rlimits, empty environment, private cwd, timeout. No isolation.
        with tempfile.TemporaryDirectory(prefix="forge-weak-") as work:
            program = os.path.join(work, "main.py")
            Path(program).write_text(code)
            argv = _limited_command(self.config, self._python, program)
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": work, "PYTHONHASHSEED": "0"}
            return await _supervise(argv, stdin, timeout, self.config.max_output_bytes, cwd=work, env=env,
                                    isolated=False)


async def _read_capped(stream: asyncio.StreamReader, buf: bytearray, cap: int, overflow: asyncio.Event) -> None:
    """Read a pipe into ``buf`` until EOF or until ``cap`` bytes; on reaching the cap set ``overflow`` and stop."""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        buf += chunk[: cap - len(buf)]
        if len(buf) >= cap:
            overflow.set()
            return


async def _feed_stdin(proc: asyncio.subprocess.Process, data: bytes | None) -> None:
    try:
        if data:
            proc.stdin.write(data)
            await proc.stdin.drain()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program exited (or closed stdin) before reading everything: not an error of ours


async def _sandbox_init(info_fd: int) -> int | None:
    """A pidfd on the sandbox's init (pid 1 of its pid namespace), from bwrap's ``--info-fd`` JSON
    (``{"child-pid": N}``, written right after bwrap clones it); None if bwrap exited before cloning."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                os.fdopen(info_fd, "rb", buffering=0))
    text = b""
    try:
        while chunk := await reader.read(4096):
            text += chunk
            try:
                pid = int(json.loads(text)["child-pid"])
            except ValueError:
                continue  # the document is not complete yet
            try:
                return os.pidfd_open(pid)  # a pidfd cannot be fooled by pid reuse once we hold it
            except ProcessLookupError:
                return None  # the sandbox already ended
        return None
    finally:
        transport.close()


async def _kill_sandbox(proc: asyncio.subprocess.Process, init: asyncio.Future | None) -> None:
    """SIGKILL the sandbox's pid namespace, then the bwrap process group.

    The namespace's init goes first: bwrap arms ``--die-with-parent`` in the child only after it is cloned, so
    SIGKILLing bwrap in that window orphaned a sandbox that then ran unsupervised, holding our pipes open (CI on a
    loaded machine hung on exactly this with 1.5 s timeouts). Killing pid 1 of a pid namespace makes the kernel
    kill every process in it. If bwrap has not cloned yet, waiting for ``--info-fd`` lets it finish doing so.
    """
    if init is not None:
        try:
            pidfd = await asyncio.wait_for(asyncio.shield(init), timeout=10.0)
        except (asyncio.TimeoutError, OSError):
            pidfd = None
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended on its own meanwhile
    # start_new_session=True made bwrap a process-group leader: SIGKILL the group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def _supervise(argv: list[str], stdin: bytes | None, timeout: float, cap: int, *, isolated: bool,
                     info_fd: int | None = None, **popen_kwargs) -> ExecutionResult:
    """Spawn ``argv``, feed stdin, read capped output, enforce the wall-clock timeout, always reap.

    ``pass_fds`` are closed here once the child holds them. ``info_fd``: the read end of bwrap's ``--info-fd``
    pipe (owned from here on), to kill the sandbox's pid namespace directly."""
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, limit=1 << 20, **popen_kwargs)
    except BaseException:
        if info_fd is not None:
            os.close(info_fd)
        raise
    finally:
        # The child has its copies now. Our copy of the --info-fd write end must go, or its EOF (bwrap exited
        # before cloning the sandbox) would never arrive.
        for fd in popen_kwargs.get("pass_fds", ()):
            os.close(fd)
    init = asyncio.ensure_future(_sandbox_init(info_fd)) if info_fd is not None else None
    overflow = asyncio.Event()
    out, err = bytearray(), bytearray()
    readers = [asyncio.ensure_future(_read_capped(s, b, cap, overflow))
               for s, b in ((proc.stdout, out), (proc.stderr, err))]
    feeder = asyncio.ensure_future(_feed_stdin(proc, stdin))
    overflow_wait = asyncio.ensure_future(overflow.wait())
    done_wait = asyncio.ensure_future(asyncio.gather(proc.wait(), *readers))
    killed = False
    try:
        done, _ = await asyncio.wait({done_wait, overflow_wait}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        killed = done_wait not in done  # the timeout fired or an output stream reached the cap
    finally:
        if killed or proc.returncode is None:
            await _kill_sandbox(proc, init)  # also when our caller cancelled us: leave nothing running
        # proc.wait() also waits for the pipes to close: EOF arrives once every holder is dead (the namespace's
        # processes die with its init). The bound guards the caller against anything that outlives that.
        try:
            await asyncio.wait_for(proc.wait(), timeout=10.0)
        except asyncio.TimeoutError:
            logger.warning("sandbox pid %d: a process still holds its output pipes 10 s after the run ended",
                           proc.pid)
        overflow_wait.cancel()
        feeder.cancel()
        await asyncio.wait(readers, timeout=1.0)
        for task in (*readers, done_wait):
            task.cancel()
        if init is not None:
            init.cancel()
            if init.done() and not init.cancelled() and init.exception() is None and init.result() is not None:
                os.close(init.result())
    truncated = overflow.is_set()
    timed_out = killed and not truncated
    exit_code = KILLED_BY_FORGE if killed else proc.returncode
    return ExecutionResult(stdout=bytes(out).decode("utf-8", errors="replace"),
                           stderr=bytes(err).decode("utf-8", errors="replace"), exit_code=exit_code,
                           timed_out=timed_out, truncated=truncated, duration_s=time.monotonic() - start,
                           isolated=isolated)
