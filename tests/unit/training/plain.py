"""An independent plain-PyTorch reference for the engine tests: unsharded HF model, one big batch, no forge code.

Written from the textbook (token-mean cross-entropy, AdamW, global-norm clipping) so that agreement with the
FSDP2 engine is evidence, not tautology.
"""

from __future__ import annotations

import math

import torch
from transformers import AutoModelForCausalLM


def load(path: str) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    return model


def sft_loss(model, input_ids, target_ids, mask) -> torch.Tensor:
    """Σ mask · (−log softmax(logits)[target]) / Σ mask. input_ids, target_ids, mask: [B, T]."""
    logits = model(input_ids=input_ids).logits.double()  # [B, T, V]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    return -(logp * mask).sum() / mask.sum()


def token_logprobs(model, input_ids, target_ids) -> torch.Tensor:
    """[B, T] log-prob of each target, in float64."""
    logits = model(input_ids=input_ids).logits.double()
    return torch.log_softmax(logits, dim=-1).gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)


def adamw_steps(model, batches, lr, max_norm, betas=(0.9, 0.999), eps=1e-8, wd=0.0) -> list[float]:
    """Hand-written AdamW (Loshchilov & Hutter, Alg. 2) with global-norm clipping; returns the losses."""
    params = [p for p in model.parameters()]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    losses = []
    for step, (ids, tgt, mask) in enumerate(batches, start=1):
        model.zero_grad()
        loss = sft_loss(model, ids, tgt, mask)
        loss.backward()
        losses.append(loss.item())
        norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params))
        scale = min(1.0, max_norm / (norm + 1e-6)) if max_norm else 1.0
        with torch.no_grad():
            for p, mi, vi in zip(params, m, v):
                g = p.grad * scale
                p.mul_(1 - lr * wd)
                mi.mul_(betas[0]).add_(g, alpha=1 - betas[0])
                vi.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
                mhat = mi / (1 - betas[0] ** step)
                vhat = vi / (1 - betas[1] ** step)
                p.sub_(lr * mhat / (vhat.sqrt() + eps))
    return losses
