"""Hugging Face views of a sharded model: named shards for the weight store, and a plain HF directory on disk.

FSDP2 keeps the HF parameter names, so ``model.state_dict()`` already maps HF name → DTensor shard. Pushing to the
weight store hands those DTensors over as they are (each rank puts only its own shard; the reader reassembles);
only ``export_hf`` gathers full tensors, one at a time, onto rank 0, because a directory on disk needs them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

# Everything of an HF directory that is not weights or config.json: tokenizer, chat template, generation config.
_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "generation_config.json",
)


def hf_state_dict(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """HF name → this rank's DTensor shard (or plain tensor) in ``dtype``; no communication."""
    out = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        out[name] = t.to(dtype) if t.is_floating_point() else t
    return out


def export_hf(model: nn.Module, source_dir: str | None, out_dir: str | Path, dtype: torch.dtype) -> Path:
    """Write a ``save_pretrained``-layout directory (safetensors shards + index, config, tokenizer) on rank 0.

    Collective: every rank must call it (the full tensors are gathered from all shards). Returns ``out_dir``.
    """
    from huggingface_hub import save_torch_state_dict

    out = Path(out_dir)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in full.items()}
        if getattr(model.config, "tie_word_embeddings", False):
            # HF re-ties on load; safetensors refuses two names for one storage.
            state.pop("lm_head.weight", None)
        save_torch_state_dict(state, str(out), max_shard_size="5GB")
        config = model.config
        saved_dtype = getattr(config, "dtype", None)
        config.dtype = dtype
        config.use_cache = True
        config.save_pretrained(str(out))
        config.dtype, config.use_cache = saved_dtype, False
        if source_dir:
            for name in _SIDE_FILES:
                src = Path(source_dir) / name
                if src.exists():
                    shutil.copyfile(src, out / name)
    dist.barrier()
    return out
