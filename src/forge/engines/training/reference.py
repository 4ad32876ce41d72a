"""The frozen reference model: per-token log-probs of given targets, no gradients, sharded like the trainer.

Used for the KL term of GRPO-family losses (``ref_logprobs``). The model is loaded and FSDP2-sharded exactly as
in the trainer (so it fits wherever the trainer fits and gives the trainer's numbers for the same weights), put
in eval mode with ``requires_grad=False``.

Data parallelism: every rank receives the whole batch, computes its block of rows in chunks of at most
``max_tokens_per_forward`` tokens, and the blocks are all-gathered, so every rank returns the full ``[B, T]``.
When B is not a multiple of W the batch is padded with copies of row 0 (their results are dropped), because
every rank must run the same number of FSDP forwards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from forge.engines.training.config import ReferenceConfig
from forge.engines.training.distributed import World, init_world
from forge.engines.training.losses import token_logprobs
from forge.engines.training.modeling import load_hf_model, resolve_param_dtype, shard_model
from forge.types import RLBatch, TextTrainBatch


class ReferenceEngine:
    """One rank of a frozen, FSDP2-sharded causal LM that scores targets."""

    def __init__(self, config: ReferenceConfig):
        self.config = config
        self.world: World | None = None
        self.model = None

    def setup(self) -> None:
        """Join the process group, load and shard the model, freeze it (idempotent)."""
        if self.model is not None:
            return
        cfg = self.config
        self.world = init_world(cfg.device)
        model = load_hf_model(cfg.model, self.world.device, cfg.seed)
        model.eval().requires_grad_(False)
        dtype = resolve_param_dtype(cfg.param_dtype, self.world.device)
        self.model = shard_model(model, self.world, dtype, torch.float32)

    def cleanup(self) -> None:
        owns = self.world is not None and self.world.owns_process_group
        self.model = None
        if owns and dist.is_initialized():
            dist.destroy_process_group()
        self.world = None

    @torch.no_grad()
    def logprobs(
        self, batch: RLBatch | TextTrainBatch | torch.Tensor, target_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-prob of each target token. batch: an RLBatch / TextTrainBatch, or input_ids [B, T] with
        target_ids [B, T]. Returns float32 [B, T] on CPU, identical on every rank, for every position (padding
        included: apply your loss_mask)."""
        if self.model is None or self.world is None:
            raise RuntimeError("ReferenceEngine.setup() has not been called")
        input_ids, target_ids = _ids_of(batch, target_ids)
        position_ids = getattr(batch, "position_ids", None)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        world = self.world
        n_rows, seq_len = input_ids.shape
        per_rank = -(-n_rows // world.world_size)
        padded = per_rank * world.world_size
        if padded != n_rows:
            pad = padded - n_rows
            input_ids, target_ids, position_ids = (
                torch.cat([t, t[:1].expand(pad, -1)]) for t in (input_ids, target_ids, position_ids)
            )
        rows = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
        ids = input_ids[rows].to(world.device)
        tgt = target_ids[rows].to(world.device)
        pos = position_ids[rows].to(world.device)
        chunk = max(1, self.config.max_tokens_per_forward // max(seq_len, 1))
        parts = []
        for start in range(0, per_rank, chunk):
            part = slice(start, start + chunk)
            logits = self.model(  # [c, T, V]; see forge.engines.training.losses.forward_logits
                input_ids=ids[part], position_ids=pos[part], attention_mask=None, use_cache=False
            ).logits
            parts.append(token_logprobs(logits, tgt[start : start + chunk], self.config.temperature))
        local = torch.cat(parts) if parts else torch.empty(0, seq_len, device=world.device)
        if world.world_size > 1:
            gathered = [torch.empty_like(local) for _ in range(world.world_size)]
            dist.all_gather(gathered, local.contiguous())
            local = torch.cat(gathered)
        return local[:n_rows].cpu()

    def get_status(self) -> dict:
        w = self.world
        return {"ready": self.model is not None, "rank": w.rank if w else None, "world_size": w.world_size if w else None}


def _ids_of(batch, target_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, T], target_ids [B, T]) from a batch record or a pair of tensors, with clear errors."""
    if isinstance(batch, (RLBatch, TextTrainBatch)):
        if target_ids is not None:
            raise ValueError("pass target_ids only with an input_ids tensor, not with a batch record")
        input_ids, target_ids = batch.input_ids, batch.target_ids
    elif isinstance(batch, torch.Tensor):
        if target_ids is None:
            raise ValueError("forward(input_ids) needs target_ids [B, T] (target_ids[:, t] = input_ids[:, t + 1])")
        input_ids = batch
    else:
        raise TypeError(f"expected RLBatch, TextTrainBatch or an input_ids tensor, got {type(batch).__name__}")
    if input_ids.dim() != 2 or input_ids.shape != target_ids.shape:
        raise ValueError(
            f"input_ids and target_ids must both be [B, T]; got {tuple(input_ids.shape)} and {tuple(target_ids.shape)}"
        )
    return input_ids, target_ids
