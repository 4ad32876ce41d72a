"""A controller that starts a vLLM Generator actor, reports the engine's process ids, then waits to be SIGKILLed.

Used by test_generator_reaper.py; run as ``python generator_kill_target.py <model dir> <pid file>``.
"""

from __future__ import annotations

import asyncio
import os
import sys


async def main(model_dir: str, pid_file: str) -> None:
    import psutil

    from forge.actors.generator import Generator

    gen = await Generator.options(procs=1).as_actor(
        engine_args={"model": model_dir, "enforce_eager": True, "dtype": "float32", "max_model_len": 128})
    assert len(await gen.generate.call_one("hi", sampling_params={"max_tokens": 4})) == 1
    pids = [p.pid for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM::")]
    from pathlib import Path

    Path(pid_file + ".tmp").write_text(" ".join(map(str, pids)))
    os.replace(pid_file + ".tmp", pid_file)
    await asyncio.sleep(3600)  # killed by the test


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
