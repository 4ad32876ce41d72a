"""ReplayBuffer and RewardActor as real Monarch actors (issue 4): the seeds' call forms, state, errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import forge.actors.reward
from forge.actors.replay_buffer import ReplayBuffer
from forge.rl.grading import FormatReward, MathReward, RewardActor, WeightedReward  # the seeds' import path
from forge.types import Episode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _actor_processes_can_import_this_module(monkeypatch):
    # BoxedExactReward is defined here; Monarch's processes import it by module name (test_rl_actors), and
    # pytest put this folder on sys.path only in the controller. Spawned processes inherit the environment.
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))


class BoxedExactReward(RewardActor):
    """The seeds' custom reward: a RewardActor subclass implementing grade()."""

    def grade(self, prompt, completion, metadata):
        match = re.search(r"\\boxed{([^}]+)}", completion)
        return 1.0 if match and match.group(1).strip() == metadata.get("target", "") else 0.0


def group(gid, version, rewards):
    return [
        Episode(
            prompt_ids=[1, 2],
            response_ids=[3],
            reward=r,
            generator_logprobs=[-0.7],
            policy_version=version,
            group_id=gid,
            advantage=0.0,
        )
        for r in rewards
    ]


async def test_replay_buffer_actor_samples_evicts_and_restores():
    buffer = await ReplayBuffer.options(procs=1).as_actor(
        batch_size=4, max_policy_age=1, dp_size=2, dynamic_sampling=True, group_size=2, seed=0
    )
    restored = None
    try:
        await buffer.add.call_one(group("old", 0, [1.0, 0.0]))
        await buffer.add.call_one(group("flat", 2, [1.0, 1.0]))  # zero variance: dropped
        for ep in group("a", 2, [0.0, 1.0]):
            await buffer.add.call_one(ep)
        assert await buffer.sample.call_one(curr_policy_version=2) is None  # "old" evicted, 2 left
        metrics = await buffer.metrics.call_one()
        assert metrics["buffer/evicted_stale"] == 2.0 and metrics["buffer/dropped_zero_variance"] == 2.0
        await buffer.add.call_one(group("b", 2, [0.5, 0.0]))
        state = await buffer.state_dict.call_one()
        shards = await buffer.sample.call_one(curr_policy_version=2)
        assert [len(s) for s in shards] == [2, 2]
        assert sorted(e.group_id for s in shards for e in s) == ["a", "a", "b", "b"]
        assert isinstance(shards[0][0], Episode)

        restored = await ReplayBuffer.options(procs=1).as_actor(
            batch_size=4, max_policy_age=1, dp_size=2, dynamic_sampling=True, group_size=2, seed=5
        )
        await restored.load_state_dict.call_one(state)
        again = await restored.sample.call_one(curr_policy_version=2)
        assert [[e.episode_id for e in s] for s in again] == [[e.episode_id for e in s] for s in shards]
        assert await restored.num_episodes.call_one() == 0
    finally:
        await ReplayBuffer.shutdown(buffer)
        if restored is not None:
            await ReplayBuffer.shutdown(restored)


async def test_reward_service_with_a_grader_and_a_seed_style_subclass():
    assert RewardActor is forge.actors.reward.RewardActor  # lazily re-exported by forge.rl.grading
    grader = WeightedReward({"math": (MathReward(), 1.0), "format": (FormatReward(), 0.5)})
    reward = await RewardActor.options(procs=1, num_replicas=2).as_service(grader=grader)
    custom = await BoxedExactReward.options(procs=1).as_actor()
    try:
        text = "<think>3/4 = 0.75</think><answer>\\boxed{0.75}</answer>"
        # The seeds' call form; math-verify runs inside the actor's event loop (not the main thread).
        assert (
            await reward.evaluate_response.route(prompt="3/4?", response=text, target="\\frac{3}{4}") == 1.5
        )
        assert (
            await reward.evaluate_response.route(prompt="3/4?", response="\\boxed{0.7}", target="0.75") == 0.0
        )
        result = await reward.evaluate.route(prompt="3/4?", response=text, target="0.75")
        assert result.components == {"math": 1.0, "format": 1.0} and result.metrics["reward/total"] == 1.5
        assert (
            await custom.evaluate_response.call_one(prompt="p", response="so \\boxed{12}", target="12") == 1.0
        )
        assert (
            await custom.evaluate_response.call_one(prompt="p", response="so \\boxed{12}", target="13") == 0.0
        )
        with pytest.raises(Exception, match=r"metadata\['target'\]"):
            await reward.evaluate_response.route(prompt="p", response="\\boxed{1}")
    finally:
        await RewardActor.shutdown(reward)
        await BoxedExactReward.shutdown(custom)
