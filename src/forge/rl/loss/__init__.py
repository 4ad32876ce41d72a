"""Policy-gradient losses for RL post-training, one per file, chosen by name from one registry table.

    from forge.rl.loss import build_loss, LossInput
    loss_fn = build_loss("dapo", clip_high=0.28)
    loss, metrics = loss_fn(logits=, target_ids=, advantages=, generator_logprobs=, loss_mask=,
    ref_logprobs=None) loss, metrics = loss_fn.from_logprobs(LossInput(...), normalizer=None)

    name      class / formula                                         paper
    grpo      GRPOLoss: clipped surrogate + β·KL, seq-mean-token-mean  DeepSeekMath, arXiv:2402.03300
    dr_grpo   GRPOLoss(agg_type="fixed_horizon", horizon=H)            Dr. GRPO, arXiv:2503.20783
    dapo      DAPOLoss: clip-higher, token-mean, no KL                 DAPO, arXiv:2503.14476
    cispo     CISPOLoss: −sg(clip(r))·A·logp                           MiniMax-M1, arXiv:2506.13585
    gspo      GSPOLoss: clip on the sequence ratio                     GSPO, arXiv:2507.18071
    sapo      SAPOLoss: soft sigmoid gate                              SAPO, arXiv:2511.20347

To add a loss: copy ``sapo.py`` (the shortest), implement ``token_loss``, and add one line to ``LOSSES``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from forge.rl.loss.base import LossInput, PolicyLoss
from forge.rl.loss.cispo import CISPOLoss
from forge.rl.loss.dapo import DAPOLoss
from forge.rl.loss.grpo import GRPOLoss
from forge.rl.loss.gspo import GSPOLoss
from forge.rl.loss.sapo import SAPOLoss

LOSSES: dict[str, Callable[..., PolicyLoss]] = {
    "grpo": GRPOLoss,
    "dr_grpo": functools.partial(GRPOLoss, agg_type="fixed_horizon"),  # + advantages estimator "dr_grpo"
    "dapo": DAPOLoss,
    "cispo": CISPOLoss,
    "gspo": GSPOLoss,
    "sapo": SAPOLoss,
}


def build_loss(name: str, **kwargs) -> PolicyLoss:
    """The loss registered under ``name`` configured with ``kwargs`` (its dataclass fields)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    factory = LOSSES[name]
    cls = factory.func if isinstance(factory, functools.partial) else factory
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(f"loss {name!r} got unknown option(s) {unknown}; its options are {sorted(fields)}")
    return factory(**kwargs)


__all__ = [
    "LOSSES",
    "build_loss",
    "LossInput",
    "PolicyLoss",
    "GRPOLoss",
    "DAPOLoss",
    "CISPOLoss",
    "GSPOLoss",
    "SAPOLoss",
]
