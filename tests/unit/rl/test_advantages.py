"""forge.rl.advantages against hand-computed numbers."""

import math

import pytest
import torch

from forge.rl.advantages import advantages_by_group, compute_advantages, group_advantages
from forge.types import Episode


def test_grpo_dr_grpo_rloo_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    std = math.sqrt((4 * 0.25) / 3)  # Bessel: Σ(R - 0.5)² / (K - 1)
    a = 0.5 / (std + 1e-6)
    torch.testing.assert_close(group_advantages(rewards, "grpo"), torch.tensor([[a, -a, -a, a]]))
    torch.testing.assert_close(group_advantages(rewards, "dr_grpo"), torch.tensor([[0.5, -0.5, -0.5, 0.5]]))
    # RLOO: R_i - mean of the other three: 1 - 1/3 = 2/3, 0 - 2/3 = -2/3
    torch.testing.assert_close(
        group_advantages(rewards, "rloo"), torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]])
    )


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_groups_of_one_and_zero_variance_groups_get_zero(estimator):
    assert group_advantages(torch.tensor([[0.7]]), estimator).tolist() == [[0.0]]
    assert group_advantages(torch.tensor([0.3, 0.3, 0.3]), estimator).tolist() == [0.0, 0.0, 0.0]


def test_ragged_groups_by_id():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 4.0], dtype=torch.float64)
    ids = torch.tensor([5, 5, 9, 5, 7, 7])
    # group 5: [1, 2, 6], mean 3, std sqrt((4 + 1 + 9) / 2) = sqrt(7); group 9 alone; group 7: [0, 4]: sqrt(8)
    s5, s7 = math.sqrt(7) + 1e-6, math.sqrt(8) + 1e-6
    want = [-2 / s5, -1 / s5, 0.0, 3 / s5, -2 / s7, 2 / s7]
    torch.testing.assert_close(advantages_by_group(rewards, ids), torch.tensor(want, dtype=torch.float64))
    rloo = advantages_by_group(rewards, ids, "rloo")  # R_i - mean(others)
    want_rloo = [1 - 4, 2 - 3.5, 0.0, 6 - 1.5, 0 - 4, 4 - 0]
    torch.testing.assert_close(rloo, torch.tensor(want_rloo, dtype=torch.float64))


def test_compute_advantages_on_episodes():
    def ep(group, reward):
        return Episode(
            prompt_ids=[1],
            response_ids=[2],
            reward=reward,
            generator_logprobs=[-1.0],
            policy_version=0,
            group_id=group,
        )

    episodes = [ep("a", 1.0), ep("b", 5.0), ep("a", 3.0), ep("c", 2.0), ep("c", 2.0)]
    compute_advantages(episodes, "dr_grpo")
    assert [e.advantage for e in episodes] == [-1.0, 0.0, 1.0, 0.0, 0.0]
    compute_advantages(episodes, "grpo")
    s = math.sqrt(2) + 1e-6  # group a: [1, 3], Bessel std sqrt(2)
    assert episodes[0].advantage == pytest.approx(-1 / s) and episodes[2].advantage == pytest.approx(1 / s)
    with pytest.raises(ValueError, match="has no group_id"):
        compute_advantages([ep("", 1.0)])
    with pytest.raises(ValueError, match="valid: grpo, dr_grpo, rloo"):
        compute_advantages(episodes, "ppo")
