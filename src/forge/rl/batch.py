"""Pack ``Episode``s into a right-padded ``RLBatch`` (the trainer's policy-gradient input).

Row i is the sequence s = prompt_ids + response_ids, shifted for next-token prediction (docs/DESIGN.md):
``input_ids[i, :n-1] = s[:-1]``, ``target_ids[i, :n-1] = s[1:]``. Response token j (= s[P + j]) is therefore
the target at position P − 1 + j, and ``loss_mask``, ``generator_logprobs`` and ``ref_logprobs`` are written
there; prompt targets and padding get mask 0 and log-prob 0. Padding uses ``pad_id`` in both ``input_ids`` and
``target_ids`` (a real token id, so gathering its log-prob is always valid).
"""

from __future__ import annotations

import torch

from forge.types import Episode, RLBatch


def _check(ep: Episode) -> None:
    length = len(ep.response_ids)
    if not ep.prompt_ids:
        raise ValueError(
            f"episode {ep.episode_id} has no prompt_ids: the first response token needs a context"
        )
    if len(ep.generator_logprobs) != length:
        raise ValueError(
            f"episode {ep.episode_id}: generator_logprobs has {len(ep.generator_logprobs)} entries for "
            f"{length} response tokens (one per response token expected)"
        )
    for name in ("response_mask", "ref_logprobs"):
        value = getattr(ep, name)
        if value is not None and len(value) != length:
            raise ValueError(
                f"episode {ep.episode_id}: {name} has {len(value)} entries for {length} response tokens"
            )
    if ep.advantage is None:
        raise ValueError(
            f"episode {ep.episode_id} has no advantage; compute it first "
            "(forge.rl.advantages.compute_advantages)"
        )


def collate_episodes(episodes: list[Episode], pad_id: int, pad_to_multiple_of: int = 1) -> RLBatch:
    """An ``RLBatch`` of B = len(episodes) rows and T = max(P + L) − 1 positions (rounded up to a multiple).

    Tensors: input_ids, target_ids [B, T] int64; loss_mask, generator_logprobs, ref_logprobs [B, T] float32;
    advantages [B] float32; policy_version [B] int64. ``ref_logprobs`` is set only if every episode has them.
    """
    if not episodes:
        raise ValueError("collate_episodes needs at least one episode")
    for ep in episodes:
        _check(ep)
    with_ref = [ep.ref_logprobs is not None for ep in episodes]
    if any(with_ref) and not all(with_ref):
        raise ValueError("either every episode of a batch has ref_logprobs or none has")
    length = max(len(ep.prompt_ids) + len(ep.response_ids) for ep in episodes) - 1
    length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    rows = len(episodes)
    input_ids = torch.full((rows, length), pad_id, dtype=torch.long)
    target_ids = torch.full((rows, length), pad_id, dtype=torch.long)
    loss_mask = torch.zeros(rows, length)
    generator_logprobs = torch.zeros(rows, length)
    ref_logprobs = torch.zeros(rows, length) if all(with_ref) else None
    for i, ep in enumerate(episodes):
        seq = torch.tensor(list(ep.prompt_ids) + list(ep.response_ids), dtype=torch.long)
        n, start, end = len(seq), len(ep.prompt_ids) - 1, len(seq) - 1
        input_ids[i, : n - 1] = seq[:-1]
        target_ids[i, : n - 1] = seq[1:]
        mask = torch.tensor(ep.response_mask if ep.response_mask is not None else [1] * len(ep.response_ids))
        on = mask != 0
        loss_mask[i, start:end] = on.float()
        # where(), not a product: tool tokens may carry -inf or NaN log-probs, which must read 0.
        generator_logprobs[i, start:end] = torch.where(on, torch.tensor(ep.generator_logprobs).float(), 0.0)
        if ref_logprobs is not None:
            ref_logprobs[i, start:end] = torch.where(on, torch.tensor(ep.ref_logprobs).float(), 0.0)
    return RLBatch(
        input_ids=input_ids,
        target_ids=target_ids,
        loss_mask=loss_mask,
        advantages=torch.tensor([float(ep.advantage) for ep in episodes]),
        generator_logprobs=generator_logprobs,
        ref_logprobs=ref_logprobs,
        policy_version=torch.tensor([ep.policy_version for ep in episodes], dtype=torch.long),
    )
