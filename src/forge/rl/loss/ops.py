"""Tensor operations shared by the policy-gradient losses.

Every loss in ``forge.rl.loss`` is written with these five pieces:

* ``compute_logprobs(logits [B, T, V], target_ids [B, T]) -> [B, T]`` — the log-prob of each target token, in
  fp32 (or fp64 for fp64 logits), computed chunk by chunk so that no full-vocabulary fp32 copy of the logits exists.
* ``compute_ratio(logprobs, behaviour_logprobs, mask) -> [B, T]`` — the importance ratio r = exp(logp − gen).
* ``compute_kl(logprobs, ref_logprobs, mask, kind) -> [B, T]`` — per-token KL estimators k1 / k2 / k3
  (Schulman, "Approximating KL divergence", 2020; k3 is DeepSeekMath's, arXiv:2402.03300 eq. 4).
* ``aggregate(values [B, T], mask [B, T], mode) -> scalar`` — the reduction over tokens and sequences.
* ``normalizer(mask, mode) -> float`` — the denominator ``aggregate`` divides by, so that the trainer can sum it
  over all micro-batches and data-parallel ranks of one optimizer step and pass it back (gradient accumulation
  then equals one large batch exactly).

Departures from the textbook: log-ratios are clamped to ±``MAX_LOG_RATIO`` (20) before ``exp`` so that a token
whose probability collapsed cannot produce ``inf``; positions where the mask is 0 always get ratio 1 and KL 0
(and no gradient), whatever the tensors hold there.
"""

from __future__ import annotations

import torch

MAX_LOG_RATIO = 20.0  # exp(20) ≈ 5e8: far beyond any clip range; keeps exp finite in fp32
DEFAULT_CHUNK_ELEMENTS = 1 << 24  # 16M logits per chunk = 64 MiB in fp32
AGG_TYPES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "fixed_horizon")
KL_KINDS = ("k1", "k2", "k3")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bf16/fp32 logits, fp64 for fp64 logits (the tests check gradients in fp64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(batch: int, positions: int, vocab: int, chunk_elements: int):
    """Yield (row slice, position slice) pairs covering [B, T] with at most ~chunk_elements logits each.

    Whole rows are grouped when a row fits in the budget; otherwise each row is cut along positions. Slicing the
    3-D tensor (rather than reshaping to [B*T, V]) never copies logits that are a non-contiguous view.
    """
    row_elems = max(positions * vocab, 1)
    if row_elems <= chunk_elements:
        rows = max(1, chunk_elements // row_elems)
        for b0 in range(0, batch, rows):
            yield slice(b0, min(b0 + rows, batch)), slice(0, positions)
    else:
        step = max(1, chunk_elements // max(vocab, 1))
        for b in range(batch):
            for t0 in range(0, positions, step):
                yield slice(b, b + 1), slice(t0, min(t0 + step, positions))


class _ChunkedLogprobs(torch.autograd.Function):
    """log_softmax(logits / temperature).gather(target) with a chunked forward *and* backward.

    Autograd over a plain chunked loop would save each chunk's fp32 copy for backward, i.e. a full fp32 copy of
    the logits in the end. Here forward saves only the logits themselves, the targets and the per-position
    log-sum-exp [B, T]; backward recomputes softmax chunk by chunk:
    d logp[b, t] / d logits[b, t, v] = (onehot(target)[v] − softmax(logits[b, t] / temperature)[v]) / temperature.
    """

    @staticmethod
    def forward(ctx, logits, target_ids, temperature, chunk_elements, want_entropy):
        batch, positions, vocab = logits.shape
        dtype = _compute_dtype(logits.dtype)
        logprobs = torch.empty(batch, positions, dtype=dtype, device=logits.device)
        lse = torch.empty_like(logprobs)
        entropy = torch.empty_like(logprobs) if want_entropy else None
        for rows, cols in _chunks(batch, positions, vocab, chunk_elements):
            z = logits[rows, cols].to(dtype)
            if temperature != 1.0:
                z = z / temperature
            chunk_lse = torch.logsumexp(z, dim=-1)
            target = target_ids[rows, cols].unsqueeze(-1)
            logprobs[rows, cols] = z.gather(-1, target).squeeze(-1) - chunk_lse
            lse[rows, cols] = chunk_lse
            if want_entropy:
                # H = -Σ p log p; xlogy keeps p = 0 (e.g. -inf logits) at 0 instead of NaN.
                p = torch.exp(z - chunk_lse.unsqueeze(-1))
                entropy[rows, cols] = -torch.special.xlogy(p, p).sum(-1)
        ctx.save_for_backward(logits, target_ids, lse)
        ctx.temperature = temperature
        ctx.chunk_elements = chunk_elements
        if want_entropy:
            ctx.mark_non_differentiable(entropy)
            return logprobs, entropy
        return logprobs, torch.zeros(0, dtype=dtype, device=logits.device)

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        logits, target_ids, lse = ctx.saved_tensors
        temperature = ctx.temperature
        batch, positions, vocab = logits.shape
        dtype = lse.dtype
        grad_logits = torch.empty_like(logits, memory_format=torch.contiguous_format)
        for rows, cols in _chunks(batch, positions, vocab, ctx.chunk_elements):
            z = logits[rows, cols].to(dtype)
            if temperature != 1.0:
                z = z / temperature
            g = grad_logprobs[rows, cols].to(dtype).unsqueeze(-1)
            grad = torch.exp(z - lse[rows, cols].unsqueeze(-1))  # softmax of the chunk
            grad.mul_(-g)
            grad.scatter_add_(-1, target_ids[rows, cols].unsqueeze(-1), g)
            if temperature != 1.0:
                grad.div_(temperature)
            grad_logits[rows, cols] = grad.to(logits.dtype)
        return grad_logits, None, None, None, None


def _check_logits(logits: torch.Tensor, target_ids: torch.Tensor, temperature: float) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if tuple(target_ids.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"target_ids must be [B, T] = {tuple(logits.shape[:2])} to match logits [B, T, V] = "
            f"{tuple(logits.shape)}, got {tuple(target_ids.shape)} (logits[:, t] scores target_ids[:, t])"
        )
    if target_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"target_ids must be int64 token ids, got dtype {target_ids.dtype}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if target_ids.numel():
        lo, hi = int(target_ids.min()), int(target_ids.max())
        if lo < 0 or hi >= logits.shape[-1]:
            raise ValueError(
                f"target_ids must lie in [0, V={logits.shape[-1]}), got values in [{lo}, {hi}] "
                "(pad targets with a real token id such as the pad id and mask them out)"
            )


def compute_logprobs(
    logits: torch.Tensor,
    target_ids: torch.Tensor,
    temperature: float = 1.0,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token under softmax(logits / temperature); differentiable.

    Args:
        logits: [B, T, V] any float dtype; ``logits[:, t]`` scores ``target_ids[:, t]``.
        target_ids: [B, T] int64.
        temperature: the sampling temperature the generator used (its log-probs are of softmax(z / temperature)).
        chunk_elements: how many logits one chunk may hold.
        return_entropy: also return the per-position entropy [B, T] of softmax(logits / temperature), detached.

    Returns:
        logprobs [B, T] in fp32 (fp64 for fp64 logits); with ``return_entropy``, ``(logprobs, entropy)``.

    Peak memory beyond the logits themselves: forward ≈ 3 × ``chunk_elements`` × 4 bytes (one fp32 chunk, its
    exp inside logsumexp, and the softmax when entropy is asked for; 192 MiB at the default) plus two [B, T] fp32
    tensors (the output and the saved log-sum-exp). Backward: the gradient of the logits (one tensor of the
    logits' dtype and shape, which any implementation must produce) plus ≈ 2 fp32 chunks. A naive
    ``log_softmax(logits.float())`` instead holds a full [B, T, V] fp32 copy from forward to backward.
    """
    _check_logits(logits, target_ids, temperature)
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
    logprobs, entropy = _ChunkedLogprobs.apply(
        logits, target_ids.long(), float(temperature), int(chunk_elements), bool(return_entropy)
    )
    return (logprobs, entropy) if return_entropy else logprobs


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
            f"aggregation 'fixed_horizon' needs horizon > 0 (the maximum response length in tokens, Dr. GRPO's "
            f"constant normaliser), got horizon={horizon}"
        )


def normalizer(mask: torch.Tensor, mode: str, horizon: int | None = None) -> float:
    """The denominator ``aggregate`` uses for ``mask`` [B, T] under ``mode``.

    token-mean: Σ m (number of trained tokens) · seq-mean-token-sum and seq-mean-token-mean: the number of rows
    with at least one trained token · fixed_horizon: B · horizon.
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
      token-mean            Σ_it m ℓ / Σ_it m                     (DAPO's token-level loss, arXiv:2503.14476 §3.3)
      seq-mean-token-sum    Σ_i Σ_t m ℓ / #{i : L_i > 0}
      seq-mean-token-mean   Σ_i (Σ_t m ℓ / L_i) / #{i : L_i > 0}  (GRPO as in DeepSeekMath eq. 3)
      fixed_horizon         Σ_it m ℓ / (B · horizon)              (Dr. GRPO's constant normaliser, arXiv:2503.20783)
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
