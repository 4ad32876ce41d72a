"""DatasetActor on a real Monarch process: sample() order, and resume from state_dict()."""

from __future__ import annotations

import pytest

from forge.data import DatasetConfig, PromptSampler, build_dataset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_dataset_actor_samples_in_sampler_order_and_resumes():
    from forge.actors.dataset import DatasetActor

    cfg = DatasetConfig(source="arithmetic", split="rl", seed=2, shuffle_seed=11)
    local = build_dataset(cfg)
    order = PromptSampler(len(local), seed=11)
    expected = [local[order.next_index()] for _ in range(6)]  # independent: the same pieces, in-process

    actor = await DatasetActor.options(procs=1).as_actor(cfg)
    try:
        assert await actor.num_samples.call_one() == 3000
        got = [await actor.sample.call_one() for _ in range(3)]
        assert got == expected[:3]
        state = await actor.state_dict.call_one()
        assert state["position"] == 3 and state["epoch"] == 0
    finally:
        await DatasetActor.shutdown(actor)

    resumed = await DatasetActor.options(procs=1).as_actor(cfg)
    try:
        await resumed.load_state_dict.call_one(state)
        assert [await resumed.sample.call_one() for _ in range(3)] == expected[3:]
    finally:
        await DatasetActor.shutdown(resumed)
