"""Tensor operations shared by the policy-gradient losses.

Every loss in ``forge.rl.loss`` is written with these five pieces:

* ``compute_logprobs(logits [B, T, V], target_ids [B, T]) -> [B, T]`` — the log-prob of each target token, in
  fp32, without a full-vocabulary fp32 copy of the logits (defined in ``forge.rl.loss.logprobs``).
* ``compute_ratio(logprobs, behaviour_logprobs, mask) -> [B, T]`` — the importance ratio r = exp(logp − gen).
* ``compute_kl(logprobs, ref_logprobs, mask, kind) -> [B, T]`` — per-token KL estimators k1 / k2 / k3
  (Schulman, "Approximating KL divergence", 2020; k3 is DeepSeekMath's, arXiv:2402.03300 eq. 4).
* ``aggregate(values [B, T], mask [B, T], mode) -> scalar`` — the reduction over tokens and sequences.
* ``normalizer(mask, mode) -> float`` — the denominator ``aggregate`` divides by, so the trainer can sum it
  over all micro-batches and data-parallel ranks of one optimizer step and pass it back (gradient accumulation
  then equals one large batch exactly).

Departures from the textbook: log-ratios are clamped to ±``MAX_LOG_RATIO`` (20) before ``exp`` so that a token
whose probability collapsed cannot produce ``inf``; positions where the mask is 0 always get ratio 1 and KL 0
(and no gradient), whatever the tensors hold there.
"""

from __future__ import annotations

import torch

from forge.rl.loss.logprobs import compute_logprobs

__all__ = ["compute_logprobs", "compute_ratio", "compute_kl", "aggregate", "normalizer", "masked_mean"]

MAX_LOG_RATIO = 20.0  # exp(20) ≈ 5e8: far beyond any clip range; keeps exp finite in fp32
AGG_TYPES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "fixed_horizon")
KL_KINDS = ("k1", "k2", "k3")


def _mask_of(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if tuple(mask.shape) != tuple(like.shape):
        raise ValueError(
            f"mask must have the shape of the values {tuple(like.shape)}, got {tuple(mask.shape)}"
        )
    return mask != 0


def compute_ratio(
    logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Importance ratio r = exp(logp − behaviour) [B, T]; 1 (no gradient) where ``mask`` [B, T] is 0.

    ``logprobs`` [B, T] are the trainer's; ``behaviour_logprobs`` [B, T] those of the policy that sampled the
    tokens (``generator_logprobs``, or ``old_logprobs`` with TIS).
    """
    on = _mask_of(mask, logprobs)
    log_ratio = torch.where(on, logprobs - behaviour_logprobs, torch.zeros_like(logprobs))
    return torch.exp(log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))


def compute_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kind: str = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) [B, T] from sampled-token log-probs; 0 where ``mask`` is 0.

    With d = logp − ref (logprobs [B, T], ref_logprobs [B, T]):
    k1 = d;  k2 = ½ d²;  k3 = exp(ref − logp) − (ref − logp) − 1  (unbiased and ≥ 0; DeepSeekMath eq. 4).
    """
    if kind not in KL_KINDS:
        raise ValueError(f"unknown KL estimator kind={kind!r}; valid kinds: {', '.join(KL_KINDS)}")
    on = _mask_of(mask, logprobs)
    d = torch.where(on, logprobs - ref_logprobs, torch.zeros_like(logprobs))
    d = d.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    return torch.exp(-d) + d - 1.0


def _check_mode(mode: str, horizon: int | None) -> None:
    if mode not in AGG_TYPES:
        raise ValueError(f"unknown aggregation mode {mode!r}; valid modes: {', '.join(AGG_TYPES)}")
    if mode == "fixed_horizon" and (horizon is None or horizon <= 0):
        raise ValueError(
            "aggregation 'fixed_horizon' needs horizon > 0 (the maximum response length in tokens, "
            f"Dr. GRPO's constant normaliser), got horizon={horizon}"
        )


def normalizer(mask: torch.Tensor, mode: str, horizon: int | None = None) -> float:
    """The denominator ``aggregate`` uses for ``mask`` [B, T] under ``mode``.

    token-mean: Σ m (number of trained tokens) · seq-mean-token-sum and seq-mean-token-mean: the number of
    rows with at least one trained token · fixed_horizon: B · horizon.
    Sum it over every micro-batch and rank of an optimizer step and pass the total to ``aggregate``.
    """
    _check_mode(mode, horizon)
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    on = mask != 0
    if mode == "token-mean":
        return float(on.sum().item())
    if mode == "fixed_horizon":
        return float(mask.shape[0] * horizon)
    return float(on.any(dim=1).sum().item())


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    horizon: int | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    """Reduce per-token values [B, T] over the positions where ``mask`` [B, T] is nonzero to a scalar.

    With L_i = Σ_t m_it:
      token-mean            Σ_it m ℓ / Σ_it m                     (DAPO's token-level loss, arXiv:2503.14476
      §3.3) seq-mean-token-sum    Σ_i Σ_t m ℓ / #{i : L_i > 0}
      seq-mean-token-mean   Σ_i (Σ_t m ℓ / L_i) / #{i : L_i > 0}  (GRPO as in DeepSeekMath eq. 3)
      fixed_horizon         Σ_it m ℓ / (B · horizon)              (Dr. GRPO's normaliser, arXiv:2503.20783)
    ``normalizer`` replaces the denominator (see ``normalizer()``); the numerator is unchanged, so summing the
    micro-batch losses computed with the step's total denominator gives exactly the large-batch loss.
    If nothing is masked in, the loss is 0 (still connected to the graph).
    """
    _check_mode(mode, horizon)
    on = _mask_of(mask, values)
    if values.dim() != 2:
        raise ValueError(f"values must be [B, T], got shape {tuple(values.shape)}")
    masked = torch.where(on, values, torch.zeros_like(values))
    if mode == "seq-mean-token-mean":
        lengths = on.sum(dim=1).clamp(min=1).to(values.dtype)
        numerator = (masked.sum(dim=1) / lengths).sum()
    else:
        numerator = masked.sum()
    if normalizer is None:
        if mode == "fixed_horizon":
            denominator = float(values.shape[0] * horizon)
        else:
            counted = on.sum() if mode == "token-mean" else on.any(dim=1).sum()
            denominator = counted.to(values.dtype).clamp(min=1.0)
    else:
        if not normalizer > 0:
            raise ValueError(
                f"normalizer must be > 0 (a token or row count summed over the step), got {normalizer}"
            )
        denominator = float(normalizer)
    return numerator / denominator


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [B, T] over positions where ``mask`` [B, T] is nonzero (0 if none); for metrics."""
    on = _mask_of(mask, values)
    total = torch.where(on, values, torch.zeros_like(values)).sum()
    return total / on.sum().clamp(min=1)
