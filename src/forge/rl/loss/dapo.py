"""DAPO: the clipped PPO surrogate with decoupled ("clip-higher") bounds and a token-level mean.

Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", arXiv:2503.14476, eq. 8:

    ℓ_t = −min(r_t · A_t, clip(r_t, 1 − ε_low, 1 + ε_high) · A_t),   r_t = π_θ(o_t) / π_gen(o_t)

aggregated with ``token-mean`` (§3.3: every token of the batch weighs the same, so long responses are not
down-weighted) and without a KL term (§2.3). ε_high > ε_low (0.28 vs 0.2, §3.1) lets low-probability tokens
rise. DAPO's other two ingredients live elsewhere in forge: dynamic sampling (dropping groups whose rewards
are all equal) in ``forge.rl.replay``, overlong reward shaping in ``forge.rl.rewards``.

GRPO (``forge.rl.loss.grpo``) is this loss with a symmetric clip, a KL penalty and a per-sequence mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forge.rl.loss import ops
from forge.rl.loss.base import LossInput, PolicyLoss, check_clip, clip_bounds, ratio_stats


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float, mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ℓ = −min(r·A, clip(r, 1 − clip_low, 1 + clip_high)·A) [B, T] and clip fractions.

    ratio, advantages, mask: [B, T]. ``loss/clip_frac`` is the fraction of trained tokens whose gradient the
    clip removes: A > 0 and r > 1 + clip_high (``loss/clip_frac_high``), or A < 0 and r < 1 − clip_low
    (``loss/clip_frac_low``).
    """
    low, high = clip_bounds(clip_low, clip_high)
    clipped = ratio.clamp(min=low, max=high)
    token_loss = -torch.min(ratio * advantages, clipped * advantages)
    with torch.no_grad():
        clip_high_hit = (advantages > 0) & (ratio > high)
        clip_low_hit = (advantages < 0) & (ratio < low)
        on = mask.to(ratio.dtype)
        stats = {
            "loss/clip_frac": ops.masked_mean((clip_high_hit | clip_low_hit).to(ratio.dtype), on),
            "loss/clip_frac_high": ops.masked_mean(clip_high_hit.to(ratio.dtype), on),
            "loss/clip_frac_low": ops.masked_mean(clip_low_hit.to(ratio.dtype), on),
        }
    return token_loss, stats


@dataclass(frozen=True, kw_only=True)
class DAPOLoss(PolicyLoss):
    """DAPO policy loss (arXiv:2503.14476). Shapes: ``LossInput`` ([B, T]; advantages [B] or [B, T])."""

    clip_low: float = 0.2  # ε_low: the ratio may fall to 1 − clip_low before the clip stops the gradient
    clip_high: float = 0.28  # ε_high: "clip-higher", the ratio may rise to 1 + clip_high
    agg_type: str = "token-mean"  # how token losses are reduced (ops.AGG_TYPES)
    horizon: int | None = None  # max response length; only for agg_type="fixed_horizon"
    tis_cap: float | None = None  # truncated importance-sampling cap C; used when old_logprobs are given

    def __post_init__(self) -> None:
        super().__post_init__()
        check_clip("clip_low", self.clip_low)
        check_clip("clip_high", self.clip_high)
        if self.clip_low is None or self.clip_high is None:
            raise ValueError(f"{type(self).__name__} needs both clip_low and clip_high (floats >= 0)")

    def token_loss(
        self, inp: LossInput, advantages: torch.Tensor, behaviour_logprobs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = ops.compute_ratio(inp.trainer_logprobs, behaviour_logprobs, inp.loss_mask)
        token_loss, stats = clipped_surrogate(ratio, advantages, self.clip_low, self.clip_high, inp.loss_mask)
        stats.update(ratio_stats(ratio.detach(), inp.loss_mask))
        stats["loss/pg"] = token_loss.detach()
        return token_loss, stats
