"""SAPO: a smooth, temperature-controlled gate in place of the hard PPO clip.

Qwen, "Soft Adaptive Policy Optimization", arXiv:2511.20347:

    ℓ_t = −f(r_t; τ_t) · A_t,   f(r; τ) = σ(τ (r − 1)) · 4 / τ,   τ_t = τ_pos if A_t > 0 else τ_neg

∂f/∂log π = 4 σ(1 − σ) · r, which is exactly 1 on-policy (r = 1): the loss starts as plain policy gradient and
softly fades the gradient as r leaves 1, faster on the side of negative advantages (τ_neg > τ_pos).
Reduced with ``seq-mean-token-mean``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forge.rl.loss import ops
from forge.rl.loss.base import LossInput, PolicyLoss, ratio_stats


@dataclass(frozen=True, kw_only=True)
class SAPOLoss(PolicyLoss):
    """SAPO policy loss (arXiv:2511.20347). Shapes: ``LossInput`` ([B, T]; advantages [B] or [B, T])."""

    tau_pos: float = 1.0  # gate temperature for tokens with A > 0
    tau_neg: float = 1.05  # gate temperature for tokens with A <= 0 (sharper: negative updates fade faster)
    agg_type: str = "seq-mean-token-mean"  # how token losses are reduced (ops.AGG_TYPES)
    horizon: int | None = None  # max response length; only for agg_type="fixed_horizon"
    tis_cap: float | None = None  # truncated importance-sampling cap C; used when old_logprobs are given

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.tau_pos > 0 and self.tau_neg > 0):
            raise ValueError(f"SAPOLoss: tau_pos and tau_neg must be > 0, got {self.tau_pos}, {self.tau_neg}")

    def token_loss(
        self, inp: LossInput, advantages: torch.Tensor, behaviour_logprobs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = ops.compute_ratio(inp.trainer_logprobs, behaviour_logprobs, inp.loss_mask)
        # full_like keeps τ in the ratio's dtype (a python-scalar where() would round 1.05 through fp32).
        tau = torch.where(
            advantages > 0, torch.full_like(ratio, self.tau_pos), torch.full_like(ratio, self.tau_neg)
        )
        gate = torch.sigmoid(tau * (ratio - 1.0))
        token_loss = -(gate * 4.0 / tau) * advantages
        stats = ratio_stats(ratio.detach(), inp.loss_mask)
        with torch.no_grad():
            # The factor that multiplies A·∇log π: 4σ(1 − σ)·r (1 on-policy).
            stats["loss/gate_weight_mean"] = ops.masked_mean(4.0 * gate * (1.0 - gate) * ratio, inp.loss_mask)
        stats["loss/pg"] = token_loss.detach()
        return token_loss, stats
