"""Reap vLLM's engine processes when the process that owns the engine dies without shutting it down.

vLLM's EngineCore and worker processes survive a SIGKILLed owner (measured: still running 32 s later, FACTS.md
"vLLM on CPU"). The owner cannot clean up after a SIGKILL, so *before* starting the engine it launches this small
watchdog process (in its own session, so a signal to the owner's process group does not reach it). Every 0.5 s the
watchdog records the owner's descendants (pid + start time) and any pids it was given; once the owner is gone (or a
zombie) it kills all of them — checking each one's start time first, so a recycled pid is never hit — and exits.
On a clean shutdown the owner terminates the watchdog itself.

Run as ``python -m forge.engines.generation.reaper <owner pid> [<pid>:<create time> ...]``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def engine_descendants() -> list[tuple[int, float]]:
    """(pid, create time) of every descendant of this process (the engine's subprocesses, once started)."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            out.append((p.pid, p.create_time()))
        except psutil.NoSuchProcess:
            pass
    return out


def start_reaper(pids: list[tuple[int, float]] = ()) -> subprocess.Popen:
    """Launch the watchdog of this process's descendants (plus ``pids``); terminate it on a clean shutdown."""
    args = [sys.executable, "-m", "forge.engines.generation.reaper", str(os.getpid())]
    args += [f"{pid}:{ct!r}" for pid, ct in pids]
    # start_new_session: the watchdog must not die with the owner's process group when the owner is killed.
    # No FORGE_MESH_* marker: the provisioner SIGKILLs every process carrying its mesh's marker when it stops a
    # mesh, and a watchdog killed together with its owner would leave the engine running (CI caught this).
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_MESH_")}
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True, env=env)


def stop_reaper(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _kill(pids: list[tuple[int, float]]) -> None:
    import psutil

    procs = []
    for pid, ct in pids:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - ct) < 1e-3:  # the same process, not a recycled pid
                procs.append(p)
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def _descendants(owner: int) -> set[tuple[int, float]]:
    import psutil

    out = set()
    try:
        children = psutil.Process(owner).children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for p in children:
        try:
            if p.pid != os.getpid():
                out.add((p.pid, p.create_time()))
        except psutil.NoSuchProcess:
            pass
    return out


def main(argv: list[str]) -> None:
    owner = int(argv[0])
    pids = {(int(a.split(":")[0]), float(a.split(":")[1])) for a in argv[1:]}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # clean shutdown by the owner: leave the engine be
    while True:
        alive = not _is_zombie(owner)
        if not alive:
            _kill(sorted(pids))
            return
        pids |= _descendants(owner)
        time.sleep(0.5)


def _is_zombie(pid: int) -> bool:
    """True if ``pid`` is gone or a zombie (killed, not yet reaped by its parent)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


if __name__ == "__main__":
    main(sys.argv[1:])
