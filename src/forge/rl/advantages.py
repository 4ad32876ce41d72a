"""Advantage estimators that compare each response with the other responses to the same prompt (its group).

With rewards R_1..R_K of one group, mean R̄ and Bessel-corrected std σ = sqrt(Σ (R_j − R̄)² / (K − 1)):

    grpo     A_i = (R_i − R̄) / (σ + 1e-6)                   DeepSeekMath, arXiv:2402.03300 §4.1.2
    dr_grpo  A_i = R_i − R̄                                   Dr. GRPO, arXiv:2503.20783 §3.1 (no std)
    rloo     A_i = R_i − mean_{j≠i} R_j = K/(K−1)·(R_i − R̄)  RLOO, Ahmadian et al., arXiv:2402.14740

A group of one has nothing to compare with: its advantage is 0 under every estimator (so is every advantage
of a group whose rewards are all equal). Three entry points: ``group_advantages`` for a [G, K] tensor of
equal-size groups, ``advantages_by_group`` for ragged groups given as ids, ``compute_advantages`` for a list
of ``Episode`` (grouped by ``group_id``; sets ``Episode.advantage``).
"""

from __future__ import annotations

from typing import Callable

import torch

from forge.types import Episode

# estimator name -> A from (R − R̄, σ, K), all [N]; rows of groups with K < 2 are zeroed afterwards.
ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "grpo": lambda centered, std, count, eps: centered / (std + eps),
    "dr_grpo": lambda centered, std, count, eps: centered,
    "rloo": lambda centered, std, count, eps: centered * count / (count - 1).clamp(min=1),
}


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")


def advantages_by_group(
    rewards: torch.Tensor, group_ids: torch.Tensor, estimator: str = "grpo", eps: float = 1e-6
) -> torch.Tensor:
    """Advantages [N] of rewards [N], each relative to the rewards sharing its id in ``group_ids`` [N]."""
    _check_estimator(estimator)
    if rewards.dim() != 1 or tuple(group_ids.shape) != tuple(rewards.shape):
        raise ValueError(
            f"rewards and group_ids must both be [N], got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    rewards = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, inverse, torch.ones_like(rewards)
    )
    total = torch.zeros_like(count).index_add_(0, inverse, rewards)
    centered = rewards - (total / count)[inverse]
    sq = torch.zeros_like(count).index_add_(0, inverse, centered * centered)
    std = (sq / (count - 1).clamp(min=1)).sqrt()[inverse]
    n = count[inverse]
    adv = ESTIMATORS[estimator](centered, std, n, eps)
    return torch.where(n > 1, adv, torch.zeros_like(adv))


def group_advantages(rewards: torch.Tensor, estimator: str = "grpo", eps: float = 1e-6) -> torch.Tensor:
    """Advantages [G, K] of rewards [G, K] (G groups of K responses each); [K] is one group."""
    if rewards.dim() == 1:
        return group_advantages(rewards.unsqueeze(0), estimator, eps).squeeze(0)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [G, K] (groups × responses) or [K], got {tuple(rewards.shape)}")
    groups, size = rewards.shape
    ids = torch.arange(groups, device=rewards.device).repeat_interleave(size)
    return advantages_by_group(rewards.reshape(-1), ids, estimator, eps).reshape(groups, size)


def compute_advantages(episodes: list[Episode], estimator: str = "grpo", eps: float = 1e-6) -> list[Episode]:
    """Set ``advantage`` on every episode, relative to the episodes sharing its ``group_id``; returns them."""
    _check_estimator(estimator)
    index: dict[str, int] = {}
    for ep in episodes:
        if not ep.group_id:
            raise ValueError(
                f"episode {ep.episode_id} has no group_id; give the episodes sampled from one prompt the "
                "same group_id so that advantages are computed within the group"
            )
        index.setdefault(ep.group_id, len(index))
    rewards = torch.tensor([float(ep.reward) for ep in episodes], dtype=torch.float64)
    ids = torch.tensor([index[ep.group_id] for ep in episodes], dtype=torch.long)
    for ep, adv in zip(episodes, advantages_by_group(rewards, ids, estimator, eps).tolist()):
        ep.advantage = adv
    return episodes
