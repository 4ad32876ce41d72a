"""The machinery every policy-gradient loss shares: the input record, validation, TIS, aggregation, metrics.

A loss is a frozen dataclass (its own config) subclassing ``PolicyLoss`` that implements one method,
``token_loss(inp, advantages, behaviour_logprobs) -> (ℓ [B, T], stats)``. ``PolicyLoss`` turns that into the
two public call forms:

    loss, metrics = loss_fn(logits=, target_ids=, advantages=, generator_logprobs=, loss_mask=,
                            ref_logprobs=None, old_logprobs=None, normalizer=None, temperature=1.0)
    loss, metrics = loss_fn.from_logprobs(LossInput(...), normalizer=None)

and provides ``loss_fn.normalizer(loss_mask)`` for gradient accumulation (see ``ops.normalizer``).

Off-policy correction (truncated importance sampling, TIS; Yao et al. 2025, "Your efficient RL framework
secretly brings you off-policy RL training"): when the trainer supplies ``old_logprobs`` — the trainer's own
log-probs at the weights the sample came from — the ratio inside the loss is taken against them,
r = exp(logp − old), and the mismatch between the generator (vLLM) and the trainer is corrected by the
detached weight w = min(exp(old − gen), tis_cap) multiplying the token loss (only when ``tis_cap`` is set).
Without ``old_logprobs`` the ratio is against the generator, r = exp(logp − gen), and no weight is applied.
(Taking r against ``gen`` *and* weighting by old/gen would count the mismatch twice.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from forge.rl.loss import ops


@dataclass(frozen=True)
class LossInput:
    """Everything a loss reads, aligned with ``target_ids``; every tensor is [B, T] except ``advantages``."""

    trainer_logprobs: torch.Tensor  # [B, T] log-prob of each target token under the weights being trained
    generator_logprobs: torch.Tensor  # [B, T] log-prob under the generator that sampled it (0 where masked)
    advantages: torch.Tensor  # [B] per sequence or [B, T] per token
    loss_mask: torch.Tensor  # [B, T] 1 on trained tokens, 0 on prompt / padding / tool output
    ref_logprobs: torch.Tensor | None = None  # [B, T] under the frozen reference model (KL penalty)
    old_logprobs: torch.Tensor | None = None  # [B, T] trainer log-probs at the sampling weights (TIS)

    def token_advantages(self) -> torch.Tensor:
        """The advantages broadcast to [B, T], in the dtype of the trainer log-probs; checks every shape."""
        shape = tuple(self.trainer_logprobs.shape)
        if len(shape) != 2:
            raise ValueError(f"trainer_logprobs must be [B, T], got shape {shape}")
        for name in ("generator_logprobs", "loss_mask", "ref_logprobs", "old_logprobs"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(
                    f"{name} must be [B, T] = {shape} like trainer_logprobs, got {tuple(value.shape)}"
                )
        adv = self.advantages.to(self.trainer_logprobs.dtype)
        if tuple(adv.shape) == shape[:1]:
            return adv.unsqueeze(1).expand(shape)
        if tuple(adv.shape) == shape:
            return adv
        raise ValueError(
            f"advantages must be [B] = {shape[:1]} (one per sequence) or [B, T] = {shape} (one per token), "
            f"got {tuple(adv.shape)}"
        )


def clip_bounds(clip_low: float | None, clip_high: float | None) -> tuple[float | None, float | None]:
    """(1 − clip_low, 1 + clip_high), None meaning that side is unbounded."""
    return (None if clip_low is None else 1.0 - clip_low, None if clip_high is None else 1.0 + clip_high)


def check_clip(name: str, value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{name} must be >= 0 (or None for no bound), got {value}")


class PolicyLoss(ABC):
    """Base of every forge policy loss. Subclasses are frozen dataclasses declaring ``agg_type``, ``horizon``,
    ``tis_cap`` and implementing ``token_loss``."""

    agg_type: str
    horizon: int | None
    tis_cap: float | None

    def __post_init__(self) -> None:
        if self.agg_type not in ops.AGG_TYPES:
            raise ValueError(
                f"{type(self).__name__}: unknown agg_type {self.agg_type!r}; "
                f"valid: {', '.join(ops.AGG_TYPES)}"
            )
        if self.agg_type == "fixed_horizon" and (self.horizon is None or self.horizon <= 0):
            raise ValueError(
                f"{type(self).__name__}: agg_type='fixed_horizon' needs horizon > 0 (the maximum response "
                f"length in tokens, Dr. GRPO's constant normaliser), got horizon={self.horizon}"
            )
        if self.tis_cap is not None and not self.tis_cap > 0:
            raise ValueError(f"{type(self).__name__}: tis_cap must be > 0 or None, got {self.tis_cap}")

    @abstractmethod
    def token_loss(
        self, inp: LossInput, advantages: torch.Tensor, behaviour_logprobs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-token loss ℓ [B, T] (before TIS weighting and aggregation) and metric tensors (scalars).

        ``advantages`` [B, T] is already broadcast; ``behaviour_logprobs`` [B, T] is what the ratio is taken
        against (``old_logprobs`` if given, else ``generator_logprobs``). Metric tensors of shape [B, T] are
        parts of the loss (``loss/pg``) and get weighted and aggregated like it; the others are scalars.
        """

    # --- shared ------------------------------------------------------------------------------------------
    def normalizer(self, loss_mask: torch.Tensor) -> float:
        """The denominator of this loss's aggregation for ``loss_mask`` [B, T] (sum it over the step)."""
        return ops.normalizer(loss_mask, self.agg_type, self.horizon)

    def __call__(
        self,
        *,
        logits: torch.Tensor,
        target_ids: torch.Tensor,
        advantages: torch.Tensor,
        generator_logprobs: torch.Tensor,
        loss_mask: torch.Tensor,
        ref_logprobs: torch.Tensor | None = None,
        old_logprobs: torch.Tensor | None = None,
        normalizer: float | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss from logits [B, T, V] and target_ids [B, T]; the other tensors as in ``LossInput``."""
        logprobs, entropy = ops.compute_logprobs(logits, target_ids, temperature, return_entropy=True)
        inp = LossInput(
            trainer_logprobs=logprobs,
            generator_logprobs=generator_logprobs,
            advantages=advantages,
            loss_mask=loss_mask,
            ref_logprobs=ref_logprobs,
            old_logprobs=old_logprobs,
        )
        return self.from_logprobs(inp, normalizer=normalizer, entropy=entropy)

    def from_logprobs(
        self, inp: LossInput, normalizer: float | None = None, *, entropy: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (a scalar tensor) and metrics (python floats) from log-probabilities.

        ``normalizer`` is the aggregation denominator summed over the optimizer step (``self.normalizer``);
        None uses this batch's own. ``entropy`` [B, T] (optional, detached) adds ``loss/entropy``.
        With a step-wide ``normalizer``, ``loss/total`` and ``loss/pg`` are this micro-batch's share (they add
        up to the step's value over micro-batches); the other metrics are means over this micro-batch.
        """
        advantages = inp.token_advantages()
        mask = inp.loss_mask
        behaviour = inp.generator_logprobs if inp.old_logprobs is None else inp.old_logprobs
        token_loss, stats = self.token_loss(inp, advantages, behaviour)
        weight = None
        if inp.old_logprobs is not None and self.tis_cap is not None:
            # w = min(π_old / π_gen, C), detached: corrects the generator/trainer mismatch (TIS).
            weight = ops.compute_ratio(inp.old_logprobs, inp.generator_logprobs, mask).clamp(max=self.tis_cap)
            weight = weight.detach()
            token_loss = token_loss * weight
            stats["loss/tis_weight_mean"] = ops.masked_mean(weight, mask)
        loss = ops.aggregate(token_loss, mask, self.agg_type, self.horizon, normalizer)
        with torch.no_grad():
            for key, value in stats.items():
                if value.dim() == 2:  # a [B, T] part of the loss (e.g. loss/pg): reduce it like the loss
                    value = value if weight is None else value * weight
                    stats[key] = ops.aggregate(value, mask, self.agg_type, self.horizon, normalizer)
            stats["loss/total"] = loss.detach()
            if entropy is not None:
                stats["loss/entropy"] = ops.masked_mean(entropy, mask)
            # KL(trainer ‖ generator), k3 on the sampled tokens: how far the policy has moved from the one that
            # sampled the batch (staleness + numerics); the plot's KL panel when there is no reference model.
            stats["loss/kl_generator"] = ops.masked_mean(
                ops.compute_kl(inp.trainer_logprobs.detach(), inp.generator_logprobs, mask, "k3"), mask)
            stats["loss/num_tokens"] = (mask != 0).sum()
        return loss, _to_floats(stats)


def ratio_stats(ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """loss/ratio_mean, loss/ratio_min, loss/ratio_max of ``ratio`` [B, T] over the masked-in tokens."""
    on = mask != 0
    any_on = on.any()
    zero = ratio.new_zeros(())
    inf = torch.full_like(ratio, float("inf"))
    return {
        "loss/ratio_mean": ops.masked_mean(ratio, mask),
        "loss/ratio_min": torch.where(any_on, torch.where(on, ratio, inf).min(), zero),
        "loss/ratio_max": torch.where(any_on, torch.where(on, ratio, -inf).max(), zero),
    }


def _to_floats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """One device-to-host copy for all metrics (each ``.item()`` would be a separate sync on a GPU)."""
    keys = list(stats)
    if not keys:
        return {}
    device = next(iter(stats.values())).device
    values = torch.stack([stats[k].detach().to(device=device, dtype=torch.float64).reshape(()) for k in keys])
    return dict(zip(keys, values.cpu().tolist()))
