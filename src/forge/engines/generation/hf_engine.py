"""The ``transformers`` generation engine: the same surface as ``VLLMEngine``, for machines without vLLM.

A plain sampling loop over an HF causal LM with a KV cache: the ``n`` samples of one call run as one batch,
and concurrent calls interleave step by step on the event loop (no continuous batching across calls: this backend
is for small models, tests and parity checks against vLLM, not throughput).

Sampling follows vLLM's semantics for the keys it supports (``config.HF_SAMPLING_KEYS``): ``temperature`` 0 is
greedy; the log-prob reported for each token is that of the distribution sampled from (after temperature, top-k,
top-p), like vLLM's ``logprobs_mode="processed_logprobs"``; greedy reports the raw log-softmax. ``max_tokens``
defaults to 16 as in vLLM.

Weight updates land between decode steps: a request in flight keeps its KV cache (computed with the old weights)
and samples its next tokens with the new ones; its ``Completion`` reports the version of its first and last token.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import torch

from forge.engines.generation.config import (
    GeneratorConfig,
    catch_up,
    encode_prompt,
    load_tokenizer,
    merge_sampling,
    version_folder,
)
from forge.types import Completion


def processed_logprobs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Log-probs of the sampling distribution. logits: [N, V] → [N, V] (-inf outside the top-k / top-p set)."""
    logits = logits.float()
    if temperature <= 0:  # greedy: vLLM reports the unscaled distribution
        return torch.log_softmax(logits, dim=-1)
    logits = logits / temperature
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return torch.log_softmax(logits, dim=-1)


class HFEngine:
    """An HF ``AutoModelForCausalLM`` behind the generation-engine surface."""

    def __init__(self, config: GeneratorConfig):
        self.config = config
        self.version = config.initial_version
        self.model = None
        self.tokenizer = None
        self._update_lock = asyncio.Lock()
        self._gen = torch.Generator()
        self.last_update: dict[str, float] = {}

    async def start(self) -> None:
        from transformers import AutoModelForCausalLM

        args = self.config.engine_args
        dtype = args.get("dtype", "auto")
        dtype = dtype if dtype == "auto" else getattr(torch, str(dtype).replace("torch.", ""))
        self.tokenizer = load_tokenizer(args)
        self.model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=dtype).eval()
        self._gen.manual_seed(int(args.get("seed", 0)))
        self._eos = {self.tokenizer.eos_token_id} | set(_as_list(self.model.generation_config.eos_token_id))
        self._eos.discard(None)
        await catch_up(self)

    async def generate(self, prompt: Any, sampling_params: Any = None) -> list[Completion]:
        """``n`` completions of ``prompt`` (text, token ids or chat messages)."""
        if self.model is None:
            raise RuntimeError("HFEngine.generate called before start()")
        prompt_ids = encode_prompt(self.tokenizer, prompt)
        sp = merge_sampling(self.config.sampling_params, sampling_params)
        n, max_tokens = int(sp.get("n", 1)), int(sp.get("max_tokens") or 16)
        temperature, top_p, top_k = float(sp.get("temperature", 1.0)), float(sp.get("top_p", 1.0)), int(
            sp.get("top_k", 0) or 0)
        gen = self._gen if sp.get("seed") is None else torch.Generator().manual_seed(int(sp["seed"]))
        stop_ids = set() if sp.get("ignore_eos") else set(self._eos)
        stop_ids |= set(sp.get("stop_token_ids") or [])
        min_tokens = int(sp.get("min_tokens", 0))

        tokens = [[] for _ in range(n)]
        logps = [[] for _ in range(n)]
        spans: list[list[list[int]]] = [[] for _ in range(n)]  # per sample: [version, start, end] token spans
        reason: list[str | None] = [None] * n
        inp = torch.tensor([prompt_ids] * n)
        past = None
        for step in range(max_tokens):
            with torch.no_grad():
                out = self.model(input_ids=inp, past_key_values=past, use_cache=True)
            past = out.past_key_values
            lp = processed_logprobs(out.logits[:, -1], temperature, top_k, top_p)  # [n, V]
            if temperature <= 0:
                nxt = lp.argmax(-1)
            else:
                nxt = torch.multinomial(lp.exp(), 1, generator=gen).squeeze(-1)
            for i in range(n):
                if reason[i] is not None:
                    continue
                t = int(nxt[i])
                tokens[i].append(t)
                logps[i].append(float(lp[i, t]))
                _extend_span(spans[i], self.version, len(tokens[i]))
                if t in stop_ids and len(tokens[i]) > min_tokens:
                    reason[i] = "stop"
            if all(r is not None for r in reason):
                break
            inp = nxt.unsqueeze(-1)
            await asyncio.sleep(0)  # let other requests and weight updates run between decode steps
        return [
            Completion(
                prompt=prompt,
                text=self.tokenizer.decode(tokens[i], skip_special_tokens=True),
                prompt_ids=list(prompt_ids),
                token_ids=tokens[i],
                logprobs=logps[i],
                stop_reason=reason[i] or "length",
                generator_version=spans[i][0][0] if spans[i] else self.version,
                generator_version_last=spans[i][-1][0] if spans[i] else self.version,
                metadata={"weight_versions": [tuple(sp) for sp in spans[i]]},
            )
            for i in range(n)
        ]

    async def update_weights(self, version: int) -> dict[str, float]:
        """Load policy ``version`` from the store into the model's parameters in place."""
        import forge.store as ws

        async with self._update_lock:
            if version <= self.version:
                return {}
            t0 = time.perf_counter()
            prefix = ws.policy_prefix(version)
            await version_folder(self.config, version)
            t1 = time.perf_counter()
            params = self.model.state_dict()
            names = [k.rsplit("/", 1)[-1] for k in ws.get_store().keys(prefix + "/")]
            unknown = [n for n in names if n not in params]
            if unknown:
                raise KeyError(f"policy version {version} holds tensors the model does not have: {unknown[:5]}")
            # Synchronous on purpose: decode steps also run on the event loop thread, so none runs mid-load.
            ws.get_store().get_state_dict(prefix, into={n: params[n] for n in names})
            self.version = version
            self.last_update = {"wait_store_s": t1 - t0, "reload_s": time.perf_counter() - t1}
            return self.last_update

    def vllm_config(self):
        return None

    async def shutdown(self) -> None:
        self.model = None


def _extend_span(spans: list[list[int]], version: int, num_tokens: int) -> None:
    """Record that token ``num_tokens - 1`` was sampled by ``version`` (spans as in vLLM's weight_versions)."""
    if spans and spans[-1][0] == version:
        spans[-1][2] = num_tokens
    else:
        spans.append([version, num_tokens - 1, num_tokens])


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple, set)) else [x]
