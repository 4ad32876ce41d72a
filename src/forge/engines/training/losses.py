"""The engine's view of a loss: a step-wide normaliser, then a per-micro-batch loss that uses it.

Gradient accumulation is exact only if every micro-batch divides by the same denominator: that of the whole
optimizer step over all data-parallel ranks (the bug class of torchforge #362 / the HF "gradient accumulation"
fix, Oct 2024). The engine therefore asks the loss for ``normalizer(step_batch)`` once, on the full batch that
every rank receives, and passes it to each micro-batch; each micro-batch loss is a *sum over its rows* divided by
that number, so the micro-batch gradients add up to the one-big-batch gradient.

* ``TextTrainBatch`` → token-mean cross-entropy: ``Σ mask·weight·CE / Σ mask``.
* ``RLBatch`` → a ``forge.rl.loss`` policy-gradient loss (``build_loss(name, **kwargs)``), fed log-probs from
  ``forge.rl.loss.ops.compute_logprobs`` and normalised by ``loss_fn.normalizer(step loss_mask)``.
"""

from __future__ import annotations

from typing import Any

import torch

from forge.types import RLBatch, TextTrainBatch

Batch = TextTrainBatch | RLBatch


def token_logprobs(logits: torch.Tensor, target_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each target under softmax(logits / temperature), in float32; differentiable.

    logits: [B, T, V] (any float dtype), target_ids: [B, T] → [B, T]. forge.rl.loss.ops.compute_logprobs works
    chunk by chunk, so no full-vocabulary fp32 copy of the logits is ever held (for a 152k vocabulary and 8 × 2048
    tokens that copy alone is 10 GB).
    """
    from forge.rl.loss.ops import compute_logprobs

    return compute_logprobs(logits, target_ids, temperature)


class CrossEntropyLoss:
    """Token-mean SFT cross-entropy over ``target_mask`` (weighted by ``target_weights`` when given)."""

    name = "cross_entropy"

    def normalizer(self, batch: TextTrainBatch) -> float:
        return float(batch.target_mask.float().sum().item())

    def __call__(
        self, logits: torch.Tensor, batch: TextTrainBatch, normalizer: float, temperature: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """logits: [b, T, V] for the micro-batch rows of ``batch`` → (Σ mask·w·CE / normalizer, metrics)."""
        logp = token_logprobs(logits, batch.target_ids, temperature)  # [b, T]
        weight = batch.target_mask.to(logp.dtype)
        if batch.target_weights is not None:
            weight = weight * batch.target_weights.to(logp.dtype)
        return -(logp * weight).sum() / max(normalizer, 1.0), {}


class PolicyGradientLoss:
    """Adapter from an RLBatch micro-batch to a ``forge.rl.loss`` loss (``from_logprobs`` + ``normalizer``)."""

    def __init__(self, name: str, kwargs: dict[str, Any]):
        from forge.rl.loss import build_loss

        self.name = name
        self.loss_fn = build_loss(name, **kwargs)

    def normalizer(self, batch: RLBatch) -> float:
        # A step with no trained token has loss 0; 1 keeps aggregate()'s "normalizer > 0" check satisfied.
        return max(float(self.loss_fn.normalizer(batch.loss_mask)), 1.0)

    def __call__(
        self, logits: torch.Tensor, batch: RLBatch, normalizer: float, temperature: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """logits: [b, T, V] for the micro-batch rows of ``batch`` → (loss, the loss's metrics)."""
        from forge.rl.loss import LossInput
        from forge.rl.loss.ops import compute_logprobs

        # The entropy comes from the same pass over the logits (no second full-vocabulary read); it is logged as
        # loss/entropy (the end-of-run plot's entropy panel), never differentiated.
        trainer_logprobs, entropy = compute_logprobs(logits, batch.target_ids, temperature, return_entropy=True)
        inp = LossInput(
            trainer_logprobs=trainer_logprobs,
            generator_logprobs=batch.generator_logprobs,
            advantages=batch.advantages,
            loss_mask=batch.loss_mask,
            ref_logprobs=batch.ref_logprobs,
            old_logprobs=batch.old_logprobs,
        )
        loss, metrics = self.loss_fn.from_logprobs(inp, normalizer=normalizer, entropy=entropy.detach())
        return loss, {k: float(v) for k, v in metrics.items()}


def build_step_loss(name: str, kwargs: dict[str, Any]) -> CrossEntropyLoss | PolicyGradientLoss:
    """The loss for the configured name: "cross_entropy" or a forge.rl.loss registry name."""
    if name == CrossEntropyLoss.name:
        if kwargs:
            raise ValueError(f"loss.name='cross_entropy' takes no kwargs, got {sorted(kwargs)}")
        return CrossEntropyLoss()
    return PolicyGradientLoss(name, kwargs)


def forward_logits(model, batch: Batch, rows: slice | None = None) -> torch.Tensor:
    """logits [b, T, V] of an HF causal LM for ``batch`` (its ``rows``). ``attention_mask=None`` on purpose: rows
    are right padded under causal attention, and a packed TextTrainBatch's ``position_ids`` (restarting at 0 per
    document) make transformers build a block-diagonal causal mask (see forge.types.TextTrainBatch)."""
    rows = rows if rows is not None else slice(None)
    position_ids = getattr(batch, "position_ids", None)
    return model(
        input_ids=batch.input_ids[rows],
        position_ids=None if position_ids is None else position_ids[rows],
        attention_mask=None,
        use_cache=False,
    ).logits


def mask_of(batch: Batch) -> torch.Tensor:
    """The [B, T] trained-token mask of either batch type."""
    return batch.target_mask if isinstance(batch, TextTrainBatch) else batch.loss_mask


def select_rows(batch: Batch, rows: slice) -> Batch:
    """The same batch type restricted to ``rows`` of every [B, ...] tensor."""
    out = {}
    for f in batch.__dataclass_fields__:
        v = getattr(batch, f)
        out[f] = v[rows] if isinstance(v, torch.Tensor) and v.dim() >= 1 else v
    return type(batch)(**out)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of the batch to ``device``."""
    out = {}
    for f in batch.__dataclass_fields__:
        v = getattr(batch, f)
        out[f] = v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
    return type(batch)(**out)


def validate_batch(batch: Batch) -> None:
    """Check types and [B, T] shapes, naming the offending field."""
    if not isinstance(batch, (TextTrainBatch, RLBatch)):
        raise TypeError(f"expected forge.types.TextTrainBatch or RLBatch, got {type(batch).__name__}")
    if batch.input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, T], got shape {tuple(batch.input_ids.shape)}")
    shape = tuple(batch.input_ids.shape)
    for f in batch.__dataclass_fields__:
        v = getattr(batch, f)
        if not isinstance(v, torch.Tensor) or f in ("advantages", "policy_version"):
            continue
        if tuple(v.shape) != shape:
            raise ValueError(f"{type(batch).__name__}.{f} has shape {tuple(v.shape)}; expected [B, T] = {shape}")
    if isinstance(batch, RLBatch) and batch.advantages.shape[0] != shape[0]:
        raise ValueError(f"RLBatch.advantages has {batch.advantages.shape[0]} rows; expected B = {shape[0]}")


# How each loss metric combines over micro-batches and ranks (forge/rl/loss/base.py): the loss and its [B, T]
# parts are already divided by the step normaliser, so they add up; counts add up; extrema take the extremum;
# everything else is a per-micro-batch mean, combined weighted by trained tokens.
ADDITIVE_METRICS = frozenset({"loss/total", "loss/pg", "loss/num_tokens"})


def combine_metrics(parts: list[tuple[float, dict[str, float]]], reduce) -> dict[str, float]:
    """Combine per-micro-batch ``(trained tokens, metrics)`` of every rank; ``reduce(values, op)`` all-reduces."""
    keys = sorted({k for _, m in parts for k in m})
    add = [k for k in keys if k in ADDITIVE_METRICS]
    mins = [k for k in keys if k.endswith("_min")]
    maxs = [k for k in keys if k.endswith("_max")]
    means = [k for k in keys if k not in ADDITIVE_METRICS and k not in mins and k not in maxs]
    sums = reduce([sum(m.get(k, 0.0) for _, m in parts) for k in add], "sum")
    weighted = reduce(
        [sum(w for w, _ in parts)] + [sum(w * m.get(k, 0.0) for w, m in parts) for k in means], "sum"
    )
    lows = reduce([min(m.get(k, float("inf")) for _, m in parts) for k in mins], "min")
    highs = reduce([max(m.get(k, float("-inf")) for _, m in parts) for k in maxs], "max")
    total_weight = max(weighted[0], 1.0)
    out = dict(zip(add, sums))
    out.update({k: v / total_weight for k, v in zip(means, weighted[1:])})
    out.update(zip(mins, lows))
    out.update(zip(maxs, highs))
    return out
