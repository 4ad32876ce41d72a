"""The data records that flow between forge's components.

One name per concept, everywhere (code, configs, metric keys):
  prompt_ids / response_ids   token ids of the prompt and of the sampled response
  generator_logprobs          log-prob of each sampled token under the generator (behaviour policy) that sampled it
  ref_logprobs                log-prob of each response token under the frozen reference model
  old_logprobs                log-prob under the trainer's weights at the version the sample came from (TIS)
  policy_version              the version of the weights that produced a sample (or that the trainer holds)
  loss_mask                   1 where a target token is trained on, 0 elsewhere (prompt, padding, tool output)

Tensor convention (every tensor-facing signature states shapes): B = rows, T = positions.
``logits[:, t]`` scores ``target_ids[:, t]``, and ``target_ids[:, t] == input_ids[:, t + 1]``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Completion:
    """One sampled response from the generator.

    ``generator_version`` is the policy version of the weights that sampled the *first* response token;
    ``generator_version_last`` that of the *last* one. They differ only when a weight update landed while the
    request was in flight (the generator keeps serving through updates). The trainer bounds staleness with the
    older one, ``generator_version``.
    """

    prompt: Any  # the prompt as given: text, token ids or chat messages
    text: str  # decoded response text
    prompt_ids: list[int]  # [P] token ids of the prompt, as the engine saw them
    token_ids: list[int]  # [L] sampled response token ids
    logprobs: list[float]  # [L] generator log-prob of each sampled token (= Episode.generator_logprobs)
    stop_reason: str | None  # "stop" (EOS / stop string), "length" (max_tokens), or the engine's reason
    generator_version: int  # policy version that produced the first response token
    generator_version_last: int | None = None  # policy version that produced the last token (None = same)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    """One prompt + response with its reward, ready for the replay buffer and the trainer.

    For multi-turn episodes ``response_ids`` holds every token after the prompt (model turns, tool results,
    environment messages) and ``response_mask`` is 1 only on tokens the model sampled; tool and environment
    tokens get 0 so the loss never trains on them. ``generator_logprobs`` has one entry per response token
    (0.0 where the mask is 0).
    """

    prompt_ids: list[int]  # [P]
    response_ids: list[int]  # [L]
    reward: float
    generator_logprobs: list[float]  # [L]
    policy_version: int  # version that sampled the response (Completion.generator_version)
    group_id: str = ""  # episodes sampled from the same prompt share a group id
    advantage: float | None = None  # set by the advantage estimator (per episode)
    response_mask: list[int] | None = None  # [L]; None = every response token is trained on
    ref_logprobs: list[float] | None = None  # [L]; filled when a reference model is used
    episode_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    reward_components: dict[str, float] = field(default_factory=dict)  # per reward term, for metrics
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def response_len(self) -> int:
        return len(self.response_ids)


@dataclass
class TextTrainBatch:
    """A supervised batch (SFT), as in the seeds. All tensors are [B, T]."""

    input_ids: torch.Tensor  # [B, T] int64
    target_ids: torch.Tensor  # [B, T] int64; target_ids[:, t] = the token after input_ids[:, t]
    target_mask: torch.Tensor  # [B, T] 1 where the target is trained on
    target_weights: torch.Tensor | None = None  # [B, T] per-token weights (None = 1)
    # [B, T] int64 position of each input token within its own document, restarting at 0 where a packed row starts
    # a new one (forge.data.sft.pack_sft). Pass it to an HF model with attention_mask=None and use_cache=False:
    # transformers then builds a block-diagonal causal mask from the restarts, so packed documents never attend to
    # each other (with a KV cache it skips that detection). None = 0..T-1.
    position_ids: torch.Tensor | None = None


@dataclass
class RLBatch:
    """A policy-gradient batch: prompts + responses packed right-padded into [B, T] rows.

    Positions follow the TextTrainBatch convention; every per-token tensor is aligned with ``target_ids``,
    so ``generator_logprobs[b, t]`` is the generator's log-prob of ``target_ids[b, t]``.
    """

    input_ids: torch.Tensor  # [B, T] int64
    target_ids: torch.Tensor  # [B, T] int64
    loss_mask: torch.Tensor  # [B, T] float; 1 on sampled response tokens
    advantages: torch.Tensor  # [B] or [B, T] float
    generator_logprobs: torch.Tensor  # [B, T] float; 0 where loss_mask is 0
    ref_logprobs: torch.Tensor | None = None  # [B, T]
    old_logprobs: torch.Tensor | None = None  # [B, T] for truncated importance sampling (TIS)
    policy_version: torch.Tensor | None = None  # [B] int64, version that sampled each row

    @property
    def num_tokens(self) -> int:
        return int(self.loss_mask.sum().item())


@dataclass
class ForwardBackwardResult:
    """What one forward/backward (or train step) returns: the loss value and scalar metrics."""

    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
