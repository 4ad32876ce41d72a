"""forge.rl.replay.ReplayBufferCore: eviction, whole-group sampling, dynamic sampling, sharding, state."""

import pickle

import pytest

from forge.rl.replay import ReplayBufferConfig, ReplayBufferCore
from forge.types import Episode


def group(gid, version, rewards):
    return [
        Episode(
            prompt_ids=[1],
            response_ids=[2, 3],
            reward=r,
            generator_logprobs=[-0.5, -0.5],
            policy_version=version,
            group_id=gid,
            advantage=0.0,
        )
        for r in rewards
    ]


def test_sample_returns_none_until_a_batch_is_stored_then_whole_groups_in_dp_shards():
    buf = ReplayBufferCore(ReplayBufferConfig(batch_size=4, max_policy_age=10, dp_size=2))
    buf.add(group("a", 0, [1, 0]))
    assert buf.sample(curr_policy_version=0) is None
    buf.add(group("b", 0, [1, 1]))
    buf.add(group("c", 0, [0, 1]))
    shards = buf.sample(curr_policy_version=0)
    assert [len(s) for s in shards] == [2, 2]
    sampled = [e.group_id for s in shards for e in s]
    assert len(set(sampled)) == 2 and all(sampled.count(g) == 2 for g in set(sampled))  # whole groups
    assert len(buf) == 2  # sampled episodes leave the buffer
    assert buf.metrics()["buffer/sampled"] == 4.0


def test_eviction_by_policy_age_hand_computed():
    buf = ReplayBufferCore(ReplayBufferConfig(batch_size=2, max_policy_age=1))
    buf.add(group("v0", 0, [1, 0]))
    buf.add(group("v1", 1, [1, 0, 1]))
    buf.add(group("v2", 2, [0, 1]))
    # at version 2 with max age 1: 2 - 0 = 2 > 1 -> the two v0 episodes go; v1 (age 1) and v2 (age 0) stay
    assert buf.evict(curr_policy_version=2) == 2
    assert buf.metrics()["buffer/evicted_stale"] == 2.0 and len(buf) == 5
    shards = buf.sample(curr_policy_version=3)  # now v1 (age 2) goes as well: 3 more
    assert buf.metrics()["buffer/evicted_stale"] == 5.0
    assert [e.group_id for e in shards[0]] == ["v2", "v2"]
    assert buf.metrics()["buffer/sampled_policy_age_mean"] == 1.0


def test_dynamic_sampling_drops_zero_variance_groups_once_complete():
    buf = ReplayBufferCore(ReplayBufferConfig(batch_size=3, dynamic_sampling=True, group_size=3))
    for ep in group("same", 0, [1, 1, 1]) + group("mixed", 0, [1, 0, 1]):
        buf.add(ep)  # one at a time, as rollout loops do
    m = buf.metrics()
    assert m["buffer/dropped_zero_variance"] == 3.0 and m["buffer/size"] == 3.0
    buf.add(group("partial", 0, [0, 0]))  # incomplete: held back, not yet judged
    assert buf.metrics()["buffer/pending"] == 2.0
    assert [e.group_id for e in buf.sample(0)[0]] == ["mixed"] * 3


def test_group_sizes_that_cannot_fill_the_batch_exactly_give_none():
    buf = ReplayBufferCore(ReplayBufferConfig(batch_size=4))
    buf.add(group("a", 0, [1, 0, 1]))
    buf.add(group("b", 0, [1, 0, 1]))
    assert buf.sample(0) is None and len(buf) == 6  # 3 + 3 cannot make 4; nothing is lost


def test_capacity_drops_oldest_groups():
    buf = ReplayBufferCore(ReplayBufferConfig(batch_size=2, max_size=4))
    for gid in "abc":
        buf.add(group(gid, 0, [1, 0]))
    assert len(buf) == 4 and buf.metrics()["buffer/evicted_capacity"] == 2.0
    assert sorted({e.group_id for s in [buf.sample(0), buf.sample(0)] for e in s[0]}) == ["b", "c"]


def test_state_dict_round_trip_continues_identically():
    def filled():
        buf = ReplayBufferCore(ReplayBufferConfig(batch_size=2, max_policy_age=5, seed=3))
        for i in range(8):
            buf.add(group(f"g{i}", i % 3, [i, 0]))
        buf.sample(curr_policy_version=2)
        return buf

    original = filled()
    restored = ReplayBufferCore(ReplayBufferConfig(batch_size=2, max_policy_age=5, seed=99))
    restored.load_state_dict(pickle.loads(pickle.dumps(original.state_dict())))
    assert restored.metrics() == original.metrics()
    for version in (2, 3, 4):
        a, b = original.sample(version), restored.sample(version)
        assert [[e.episode_id for e in s] for s in a] == [[e.episode_id for e in s] for s in b]
    with pytest.raises(KeyError, match="missing"):
        restored.load_state_dict({"groups": {}})


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="multiple of dp_size"):
        ReplayBufferConfig(batch_size=6, dp_size=4)
    with pytest.raises(ValueError, match="group_size >= 2"):
        ReplayBufferConfig(batch_size=4, dynamic_sampling=True)
    buf = ReplayBufferCore(ReplayBufferConfig(batch_size=2))
    with pytest.raises(ValueError, match="no group_id"):
        buf.add(group("", 0, [1]))
    with pytest.raises(TypeError, match="takes Episode objects"):
        buf.add([{"reward": 1}])
