"""GPU placement on real CUDA devices: every process of a with_gpus mesh sees exactly its own device."""

from __future__ import annotations

import os
import sys

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


async def test_with_gpus_gives_each_process_a_distinct_device():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
    from controller_actors import GlooWorker

    from forge.controller import PlacementError

    n = torch.cuda.device_count()
    actor = await GlooWorker.options(procs=n, with_gpus=True).as_actor()
    try:
        envs = [v for _, v in (await actor.env.call()).items()]
        devices = [e["CUDA_VISIBLE_DEVICES"] for e in envs]
        assert len(set(devices)) == n and all(d is not None and "," not in d for d in devices)
        with pytest.raises(PlacementError, match="needs 1 GPU"):  # all devices are held by `actor`
            await GlooWorker.options(procs=1, with_gpus=True).as_actor()
    finally:
        await GlooWorker.shutdown(actor)
