"""Per-token log-probs (and entropy) from logits without a full-vocabulary fp32 copy of the logits.

``compute_logprobs(logits [B, T, V], target_ids [B, T], temperature)`` = log_softmax(logits / τ)[target] in
fp32. The naive ``torch.log_softmax(logits.float() / τ, -1).gather(...)`` keeps [B, T, V] fp32 tensors alive
from forward to backward: 2 × 4 bytes per logit, ~20 GiB for 16k tokens of a 152k vocabulary. Two
implementations avoid that, both with the same custom autograd rule (forward saves only the logits, the
targets and the log-sum-exp [B, T]; backward recomputes the softmax:
d logp / d logits[v] = (onehot(target)[v] − softmax(logits / τ)[v]) / τ):

* ``fused`` (default on CUDA): two ``torch.compile``d kernels — a reduction for the forward and one pointwise
  kernel for the backward that writes the gradient directly in the logits' dtype. No fp32 [B, T, V] tensor is
  ever materialised. First call compiles (~5 s); shapes are dynamic, so no recompiles as B and T change.
* ``chunked`` (default elsewhere): eager PyTorch over slices of ``chunk_elements`` logits; peak extra memory
  ≈ 3 fp32 chunks (192 MiB at the default 16M elements).

With ``impl="auto"``, if torch.compile fails on this machine (e.g. no working Triton), the first call logs a
warning and every call uses ``chunked``.

Measured on an H100, forward + backward for B=8, T=2048, V=151936 bf16 (docs/PERFORMANCE.md, "RL core"): naive
55.7 ms and 23.2 GiB extra; chunked 97 ms and 0.13 GiB; fused 12.4 ms and ~0 GiB.
"""

from __future__ import annotations

import functools
import logging

import torch

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # 16M logits per chunk = 64 MiB in fp32
IMPLS = ("auto", "fused", "chunked")

log = logging.getLogger(__name__)
_FUSED_FAILED = False  # set when torch.compile failed once under impl="auto"


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bf16/fp32 logits, fp64 for fp64 logits (the tests check gradients in fp64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --- fused (torch.compile) --------------------------------------------------------------------------------
def _fused_forward(logits, target_ids, inv_temperature: float, want_entropy: bool):
    """logp, lse, entropy-or-None [B, T] from logits [B, T, V]; compiled, so z below is never materialised."""
    z = logits.to(_compute_dtype(logits.dtype)) * inv_temperature
    lse = torch.logsumexp(z, dim=-1)
    logp = z.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1) - lse
    if not want_entropy:
        return logp, lse, None
    p = torch.exp(z - lse.unsqueeze(-1))
    plogit = torch.where(p > 0, p * z, torch.zeros_like(z))  # 0 · (−inf) of masked vocabulary entries → 0
    return logp, lse, lse - plogit.sum(dim=-1)


def _fused_backward(logits, target_ids, lse, grad_logprobs, inv_temperature: float):
    """d loss / d logits [B, T, V] in the logits' dtype, in one pointwise kernel."""
    z = logits.to(lse.dtype) * inv_temperature
    p = torch.exp(z - lse.unsqueeze(-1))
    vocab = torch.arange(logits.shape[-1], device=logits.device)
    onehot = (vocab == target_ids.unsqueeze(-1)).to(lse.dtype)
    return ((onehot - p) * (grad_logprobs.to(lse.dtype) * inv_temperature).unsqueeze(-1)).to(logits.dtype)


@functools.cache
def _compiled(name: str):
    fn = {"forward": _fused_forward, "backward": _fused_backward}[name]
    return torch.compile(fn, dynamic=True)


# --- chunked (eager) --------------------------------------------------------------------------------------
def _chunks(batch: int, positions: int, vocab: int, chunk_elements: int):
    """Yield (row slice, position slice) pairs covering [B, T] with at most ~chunk_elements logits each.

    Whole rows are grouped when a row fits in the budget; otherwise each row is cut along positions. Slicing
    the 3-D tensor (rather than reshaping to [B*T, V]) never copies logits that are a non-contiguous view.
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


def _scaled_chunk(logits: torch.Tensor, rows: slice, cols: slice, dtype: torch.dtype, temperature: float):
    """A fresh compute-dtype copy of logits[rows, cols] / temperature (safe to modify in place)."""
    z = logits[rows, cols].to(dtype, copy=True)
    return z if temperature == 1.0 else z.mul_(1.0 / temperature)


def _chunked_forward(logits, target_ids, temperature, chunk_elements, want_entropy):
    batch, positions, vocab = logits.shape
    logprobs = torch.empty(batch, positions, dtype=_compute_dtype(logits.dtype), device=logits.device)
    lse = torch.empty_like(logprobs)
    entropy = torch.empty_like(logprobs) if want_entropy else None
    for rows, cols in _chunks(batch, positions, vocab, chunk_elements):
        z = _scaled_chunk(logits, rows, cols, logprobs.dtype, temperature)
        if want_entropy:
            # One exp serves both: lse = m + log Σ e, p = e / Σ e, H = lse − Σ p·z. nansum drops the
            # 0·(−inf) terms of masked-out vocabulary entries (their p is exactly 0).
            top = z.amax(dim=-1, keepdim=True)
            p = torch.exp(z - top)
            total = p.sum(dim=-1, keepdim=True)
            chunk_lse = (top + total.log()).squeeze(-1)
            entropy[rows, cols] = chunk_lse - torch.nansum(p.div_(total).mul_(z), dim=-1)
        else:
            chunk_lse = torch.logsumexp(z, dim=-1)
        target = target_ids[rows, cols].unsqueeze(-1)
        logprobs[rows, cols] = z.gather(-1, target).squeeze(-1) - chunk_lse
        lse[rows, cols] = chunk_lse
    return logprobs, lse, entropy


def _chunked_backward(logits, target_ids, lse, grad_logprobs, temperature, chunk_elements):
    batch, positions, vocab = logits.shape
    grad_logits = torch.empty_like(logits, memory_format=torch.contiguous_format)
    for rows, cols in _chunks(batch, positions, vocab, chunk_elements):
        grad = _scaled_chunk(logits, rows, cols, lse.dtype, temperature)
        grad.sub_(lse[rows, cols].unsqueeze(-1)).exp_()  # softmax of the chunk, in place
        g = grad_logprobs[rows, cols].to(lse.dtype).unsqueeze(-1)
        grad.mul_(-g)
        grad.scatter_add_(-1, target_ids[rows, cols].unsqueeze(-1), g)
        if temperature != 1.0:
            grad.mul_(1.0 / temperature)
        grad_logits[rows, cols] = grad  # copy_ casts to the logits' dtype
    return grad_logits


# --- autograd ---------------------------------------------------------------------------------------------
class _LogProbs(torch.autograd.Function):
    """log_softmax(logits / temperature).gather(target) with a memory-lean forward *and* backward."""

    @staticmethod
    def forward(ctx, logits, target_ids, temperature, chunk_elements, want_entropy, fused):
        if fused:
            logprobs, lse, entropy = _compiled("forward")(logits, target_ids, 1.0 / temperature, want_entropy)
        else:
            logprobs, lse, entropy = _chunked_forward(
                logits, target_ids, temperature, chunk_elements, want_entropy
            )
        ctx.save_for_backward(logits, target_ids, lse)
        ctx.temperature, ctx.chunk_elements, ctx.fused = temperature, chunk_elements, fused
        if entropy is None:
            entropy = logprobs.new_zeros(0)
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        logits, target_ids, lse = ctx.saved_tensors
        if ctx.fused:
            grad = _compiled("backward")(logits, target_ids, lse, grad_logprobs, 1.0 / ctx.temperature)
        else:
            grad = _chunked_backward(
                logits, target_ids, lse, grad_logprobs, ctx.temperature, ctx.chunk_elements
            )
        return grad, None, None, None, None, None


def _check_logits(logits: torch.Tensor, target_ids: torch.Tensor, temperature: float, impl: str) -> None:
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
    if impl not in IMPLS:
        raise ValueError(f"unknown compute_logprobs impl {impl!r}; valid: {', '.join(IMPLS)}")
    if target_ids.numel():
        lo, hi = torch.stack([target_ids.min(), target_ids.max()]).tolist()  # one device sync
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
    impl: str = "auto",
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token under softmax(logits / temperature); differentiable.

    Args:
        logits: [B, T, V] any float dtype; ``logits[:, t]`` scores ``target_ids[:, t]``.
        target_ids: [B, T] int64.
        temperature: the generator's sampling temperature (its log-probs are of softmax(logits / τ)).
        impl: "fused" (torch.compile), "chunked" (eager), or "auto" = fused on CUDA, chunked elsewhere.
        chunk_elements: how many logits one chunk may hold (chunked only).
        return_entropy: also return the entropy [B, T] of softmax(logits / temperature), detached.

    Returns:
        logprobs [B, T] in fp32 (fp64 for fp64 logits); with ``return_entropy``, ``(logprobs, entropy)``.

    Peak memory beyond the logits: fused — only [B, T] tensors; chunked — ≈ 3 × ``chunk_elements`` × 4 bytes
    (192 MiB at the default). Both keep two [B, T] fp32 tensors (output, saved log-sum-exp) and produce in
    backward the gradient of the logits (their dtype and shape, as any implementation must).
    """
    _check_logits(logits, target_ids, temperature, impl)
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
    global _FUSED_FAILED
    fused = impl == "fused" or (impl == "auto" and logits.is_cuda and not _FUSED_FAILED)
    args = (logits, target_ids.long(), float(temperature), int(chunk_elements), bool(return_entropy))
    try:
        logprobs, entropy = _LogProbs.apply(*args, fused)
    except Exception as exc:  # torch.compile unavailable here: fall back once and for all (auto only)
        if not (fused and impl == "auto"):
            raise
        log.warning("compute_logprobs: torch.compile failed (%s); using the chunked implementation", exc)
        _FUSED_FAILED = True
        logprobs, entropy = _LogProbs.apply(*args, False)
    return (logprobs, entropy) if return_entropy else logprobs
