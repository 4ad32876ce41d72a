"""GRPO: DAPO's clipped surrogate with a symmetric clip, a KL penalty and a per-sequence mean.

Shao et al., "DeepSeekMath", arXiv:2402.03300, eq. 3:

    ℓ_t = −min(r_t · A_t, clip(r_t, 1 − ε_low, 1 + ε_high) · A_t) + β · KL_t,   r_t = π_θ(o_t) / π_gen(o_t)

reduced with ``seq-mean-token-mean`` (1/G Σ_i 1/|o_i| Σ_t). KL_t is one of the estimators of
``ops.compute_kl`` (k3 in the paper, eq. 4). The paper's ε is symmetric: clip_low = clip_high = 0.2.

Dr. GRPO (Liu et al., "Understanding R1-Zero-Like Training", arXiv:2503.20783) is registered as ``dr_grpo``:
this loss with ``agg_type="fixed_horizon"`` (Σ ℓ / (B · horizon), removing the length bias of the per-sequence
mean) and advantages without std normalisation (``forge.rl.advantages``, estimator "dr_grpo").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forge.rl.loss import ops
from forge.rl.loss.base import LossInput
from forge.rl.loss.dapo import DAPOLoss


@dataclass(frozen=True, kw_only=True)
class GRPOLoss(DAPOLoss):
    """GRPO policy loss (arXiv:2402.03300). Shapes: ``LossInput`` ([B, T]; advantages [B] or [B, T])."""

    clip_low: float = 0.2  # ε below 1
    clip_high: float = 0.2  # ε above 1 (symmetric in the paper; raise it for DAPO's clip-higher)
    beta: float = 0.0  # KL penalty coefficient β; > 0 needs ref_logprobs
    kl_type: str = "k3"  # KL estimator: k1, k2 or k3 (ops.compute_kl)
    agg_type: str = "seq-mean-token-mean"  # how token losses are reduced (ops.AGG_TYPES)
    horizon: int | None = None  # max response length; only for agg_type="fixed_horizon" (Dr. GRPO)
    tis_cap: float | None = None  # truncated importance-sampling cap C; used when old_logprobs are given

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_type not in ops.KL_KINDS:
            raise ValueError(f"GRPOLoss: unknown kl_type {self.kl_type!r}; valid: {', '.join(ops.KL_KINDS)}")
        if not self.beta >= 0:
            raise ValueError(f"GRPOLoss: beta must be >= 0, got {self.beta}")

    def token_loss(
        self, inp: LossInput, advantages: torch.Tensor, behaviour_logprobs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        token_loss, stats = super().token_loss(inp, advantages, behaviour_logprobs)
        if inp.ref_logprobs is None:
            if self.beta > 0:
                raise ValueError(
                    f"GRPOLoss(beta={self.beta}) needs ref_logprobs [B, T]; pass them or set beta=0"
                )
            return token_loss, stats
        kl = ops.compute_kl(inp.trainer_logprobs, inp.ref_logprobs, inp.loss_mask, self.kl_type)
        stats["loss/kl"] = ops.masked_mean(kl.detach(), inp.loss_mask)  # reported even when beta = 0
        if self.beta == 0.0:
            return token_loss, stats
        return token_loss + self.beta * kl, stats
