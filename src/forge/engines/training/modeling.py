"""Build a Hugging Face causal LM and shard it with FSDP2, shared by the trainer and the reference model.

Order of wrapping follows TorchTitan: activation checkpointing, then ``torch.compile``, then ``fully_shard`` on
every decoder layer and finally on the root. All three keep parameter names unchanged (composable
``checkpoint``, in-place ``Module.compile``, FSDP2), so ``model.state_dict()`` keys stay the HF names that vLLM
and ``from_pretrained`` expect — no prefix stripping anywhere.

Weights are loaded in float32 (the master copy that AdamW updates); FSDP2's ``MixedPrecisionPolicy`` casts them
to ``param_dtype`` for compute and reduces gradients in ``reduce_dtype``. Every rank reads the full checkpoint
before sharding (fine up to a few billion parameters; meta-device init + sharded loading is the exit for larger).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from forge.engines.training.config import ModelConfig
from forge.engines.training.distributed import World

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_param_dtype(spec: str, device: torch.device) -> torch.dtype:
    """"auto" → bfloat16 on CUDA with bf16 support, float32 elsewhere (CPU bf16 matmuls are slow and inexact)."""
    if spec != "auto":
        return DTYPES[spec]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_hf_model(cfg: ModelConfig, device: torch.device, seed: int) -> nn.Module:
    """The HF model in float32 on ``device`` (random-init from config.json when ``cfg.random_init``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not cfg.path:
        raise ValueError("model.path is empty: give a local Hugging Face model directory")
    hf_config = AutoConfig.from_pretrained(cfg.path)
    if cfg.random_init:
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(
                hf_config, dtype=torch.float32, attn_implementation=cfg.attn_implementation
            )
    else:
        model = AutoModelForCausalLM.from_pretrained(
            cfg.path, dtype=torch.float32, attn_implementation=cfg.attn_implementation
        )
        model.to(device)
    model.config.use_cache = False
    return model


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (the classes HF lists in ``_no_split_modules``), in order."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__}: found no decoder layers (looked for {sorted(names)})")
    return layers


def shard_model(
    model: nn.Module,
    world: World,
    param_dtype: torch.dtype,
    reduce_dtype: torch.dtype,
    activation_checkpoint: bool = False,
    compile_layers: bool = False,
) -> nn.Module:
    """Apply AC / compile / FSDP2 in place (per decoder layer, then the root); returns the same module."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    layers = decoder_layers(model)
    for layer in layers:
        if activation_checkpoint:
            from torch.distributed._composable import checkpoint

            checkpoint(layer)
        if compile_layers:
            layer.compile()
    for i, layer in enumerate(layers):
        # The last layer's params are needed again right away by backward: keep them gathered (TorchTitan).
        fully_shard(layer, mesh=world.mesh, mp_policy=mp, reshard_after_forward=i < len(layers) - 1)
    fully_shard(model, mesh=world.mesh, mp_policy=mp)
    return model


def model_flops_per_token(hf_config, seq_len: int) -> float:
    """Training FLOPs per token: 6·N (non-embedding params) + 12·L·H·T attention (PaLM appendix B / TorchTitan)."""
    h = hf_config.hidden_size
    n_layers = hf_config.num_hidden_layers
    head_dim = getattr(hf_config, "head_dim", None) or h // hf_config.num_attention_heads
    n_heads = hf_config.num_attention_heads
    n_kv = getattr(hf_config, "num_key_value_heads", n_heads)
    inter = hf_config.intermediate_size
    per_layer = h * head_dim * (n_heads + 2 * n_kv) + n_heads * head_dim * h + 3 * h * inter
    n_params = n_layers * per_layer + hf_config.vocab_size * h  # + lm_head (its matmul counts; embedding doesn't)
    return 6.0 * n_params + 12.0 * n_layers * n_heads * head_dim * seq_len
