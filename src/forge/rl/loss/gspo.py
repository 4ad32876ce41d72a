"""GSPO: the clipped surrogate on a *sequence-level*, length-normalised importance ratio.

Zheng et al. (Qwen), "Group Sequence Policy Optimization", arXiv:2507.18071, eq. 5–7:

    s_i = exp( (1/L_i) Σ_t m_it (log π_θ(o_it) − log π_gen(o_it)) )
    ℓ_i = −min(s_i · A_i, clip(s_i, 1 − ε_low, 1 + ε_high) · A_i),   loss = mean over rows with L_i > 0

The clip range is tiny (3e-4 / 4e-4, §5.1) because s_i is a geometric mean over tokens.
``level="token"`` is GSPO-token (eq. 13–14): log s_it = sg(log s_i) + log π_θ(o_it) − sg(log π_θ(o_it)),
clipped per token and reduced with ``seq-mean-token-mean``; s_it has the value s_i and the gradient of a
per-token ratio, which allows per-token advantages and equals the sequence level in value and gradient
when A is per sequence.

At sequence level A_i is the row's mean advantage over its trained tokens (= A_i for per-sequence advantages);
the row loss ℓ_i is broadcast to the row's tokens so that ``seq-mean-token-mean`` gives the paper's mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forge.rl.loss import ops
from forge.rl.loss.base import LossInput, PolicyLoss, check_clip, ratio_stats
from forge.rl.loss.dapo import clipped_surrogate

GSPO_LEVELS = ("sequence", "token")


def sequence_log_ratio(logprobs: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log s_i = (1/L_i) Σ_t m (logp − behaviour) [B] from logprobs, behaviour, mask [B, T]; 0 if L_i = 0."""
    on = mask != 0
    diff = torch.where(on, logprobs - behaviour, torch.zeros_like(logprobs))
    lengths = on.sum(dim=1).clamp(min=1).to(logprobs.dtype)
    return (diff.sum(dim=1) / lengths).clamp(-ops.MAX_LOG_RATIO, ops.MAX_LOG_RATIO)


@dataclass(frozen=True, kw_only=True)
class GSPOLoss(PolicyLoss):
    """GSPO policy loss (arXiv:2507.18071). Shapes: ``LossInput`` ([B, T]; advantages [B] or [B, T])."""

    clip_low: float = 3e-4  # ε_low on the sequence ratio s_i
    clip_high: float = 4e-4  # ε_high on the sequence ratio s_i
    level: str = "sequence"  # "sequence" (GSPO) or "token" (GSPO-token, per-token advantages)
    agg_type: str = "seq-mean-token-mean"  # reduction; the default gives the paper's mean over sequences
    horizon: int | None = None  # max response length; only for agg_type="fixed_horizon"
    tis_cap: float | None = None  # truncated importance-sampling cap C; used when old_logprobs are given

    def __post_init__(self) -> None:
        super().__post_init__()
        check_clip("clip_low", self.clip_low)
        check_clip("clip_high", self.clip_high)
        if self.clip_low is None or self.clip_high is None:
            raise ValueError("GSPOLoss needs both clip_low and clip_high (floats >= 0)")
        if self.level not in GSPO_LEVELS:
            raise ValueError(f"GSPOLoss: unknown level {self.level!r}; valid: {', '.join(GSPO_LEVELS)}")

    def token_loss(
        self, inp: LossInput, advantages: torch.Tensor, behaviour_logprobs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = inp.loss_mask
        on = mask != 0
        logprobs = torch.where(on, inp.trainer_logprobs, torch.zeros_like(inp.trainer_logprobs))
        log_s = sequence_log_ratio(logprobs, behaviour_logprobs, mask)  # [B]
        if self.level == "sequence":
            rows = on.any(dim=1, keepdim=True)  # [B, 1]
            lengths = on.sum(dim=1).clamp(min=1).to(logprobs.dtype)
            seq_adv = torch.where(on, advantages, torch.zeros_like(advantages)).sum(dim=1) / lengths  # [B]
            s = torch.exp(log_s).unsqueeze(1)  # [B, 1]
            seq_loss, stats = clipped_surrogate(s, seq_adv.unsqueeze(1), self.clip_low, self.clip_high, rows)
            token_loss = seq_loss.expand_as(logprobs)
            stats.update(ratio_stats(s.detach(), rows))
        else:
            log_s_tok = log_s.detach().unsqueeze(1) + logprobs - logprobs.detach()
            s_tok = torch.exp(log_s_tok)
            token_loss, stats = clipped_surrogate(s_tok, advantages, self.clip_low, self.clip_high, mask)
            stats.update(ratio_stats(s_tok.detach(), mask))
        stats["loss/pg"] = token_loss.detach()
        return token_loss, stats
