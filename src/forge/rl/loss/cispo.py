"""CISPO: REINFORCE weighted by a clipped, detached importance-sampling weight.

MiniMax, "MiniMax-M1", arXiv:2506.13585, eq. 4–5:

    ℓ_t = −sg(clip(r_t, 1 − ε_low, 1 + ε_high)) · A_t · log π_θ(o_t),   r_t = π_θ(o_t) / π_gen(o_t)

Unlike the PPO clip, the clip here bounds the *weight* and never drops a token's gradient: every token keeps
∇ = −ŵ · A · ∇log π. ``clip_low=None`` leaves the lower side unbounded (the paper sets no lower bound in
practice; only ε_high is tuned). Reduced with ``token-mean`` as in the paper. The loss *value* is
−ŵ · A · logp, which is not the surrogate's value; only its gradient is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forge.rl.loss import ops
from forge.rl.loss.base import LossInput, PolicyLoss, check_clip, clip_bounds, ratio_stats


@dataclass(frozen=True, kw_only=True)
class CISPOLoss(PolicyLoss):
    """CISPO policy loss (arXiv:2506.13585). Shapes: ``LossInput`` ([B, T]; advantages [B] or [B, T])."""

    clip_low: float | None = None  # ε_low; None = no lower bound on the IS weight
    clip_high: float | None = 4.0  # ε_high; the IS weight is capped at 1 + clip_high (None = no cap)
    agg_type: str = "token-mean"  # how token losses are reduced (ops.AGG_TYPES)
    horizon: int | None = None  # max response length; only for agg_type="fixed_horizon"
    tis_cap: float | None = None  # truncated importance-sampling cap C; used when old_logprobs are given

    def __post_init__(self) -> None:
        super().__post_init__()
        check_clip("clip_low", self.clip_low)
        check_clip("clip_high", self.clip_high)

    def token_loss(
        self, inp: LossInput, advantages: torch.Tensor, behaviour_logprobs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = ops.compute_ratio(inp.trainer_logprobs, behaviour_logprobs, inp.loss_mask).detach()
        low, high = clip_bounds(self.clip_low, self.clip_high)
        weight = ratio.clamp(min=low, max=high)
        on = inp.loss_mask != 0
        # Masked positions may hold anything in trainer_logprobs (e.g. -inf): keep them out of the product.
        logprobs = torch.where(on, inp.trainer_logprobs, torch.zeros_like(inp.trainer_logprobs))
        token_loss = -weight * advantages * logprobs
        stats = ratio_stats(ratio, inp.loss_mask)
        stats["loss/clip_frac"] = ops.masked_mean((weight != ratio).to(ratio.dtype), inp.loss_mask)
        stats["loss/pg"] = token_loss.detach()
        return token_loss, stats
