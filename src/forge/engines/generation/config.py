"""Configuration of a generation engine, and the prompt / sampling conversions both backends share.

``GeneratorConfig`` is what ``Generator(engine_args=..., sampling_params=..., backend=...)`` builds: vLLM-style
``engine_args`` (a dict or a ``vllm.AsyncEngineArgs``) and default ``sampling_params`` (a dict or a
``vllm.SamplingParams``), both normalised to plain dicts so the same config drives the vLLM and the
``transformers`` backends and crosses process boundaries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

BACKENDS = ("vllm", "hf")
# How the vLLM backend loads a new version: "inplace" copies the store's tensors straight into the engine's live
# parameters (CUDA, unquantized dense models; vllm_worker.py), "reload" uses vLLM's reload_weights (any model,
# CPU included), "auto" picks "inplace" wherever it is valid.
WEIGHT_LOADS = ("auto", "inplace", "reload")

# Sampling keys the hf backend implements; vLLM accepts any SamplingParams field.
HF_SAMPLING_KEYS = {"n", "temperature", "top_p", "top_k", "max_tokens", "seed", "stop_token_ids", "logprobs",
                    "ignore_eos", "min_tokens", "output_kind", "detokenize", "skip_special_tokens"}


def _as_dict(obj: Any, what: str) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    if dataclasses.is_dataclass(obj):  # vllm.AsyncEngineArgs / EngineArgs
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) != f.default and f.default is not dataclasses.MISSING}
    if type(obj).__name__ == "SamplingParams":  # vllm.SamplingParams (a msgspec struct)
        from vllm import SamplingParams

        default = SamplingParams()
        return {k: getattr(obj, k) for k in obj.__struct_fields__
                if not k.startswith("_") and getattr(obj, k) != getattr(default, k)}
    raise TypeError(f"{what} must be a dict or a vLLM {what} object, got {type(obj).__name__}")


@dataclass(frozen=True)
class GeneratorConfig:
    """One generation engine: which backend, the model, default sampling and how weight updates are waited for."""

    engine_args: dict[str, Any]  # vLLM engine args; "model" (an HF folder) is required, the hf backend reads
    #                              "model", "dtype", "seed" and "max_model_len"
    sampling_params: dict[str, Any] = field(default_factory=dict)  # defaults for every generate() call
    backend: str = "vllm"  # "vllm" (AsyncLLM) or "hf" (transformers, no vLLM needed)
    initial_version: int = 0  # policy version of the weights in engine_args["model"]
    update_timeout_s: float = 120.0  # how long update_weights waits for a version to be complete in the store
    weight_source: Any = None  # a forge.store.rdma.StoreServer on the trainer's host: versions missing from this
    #                            host's store are fetched from it over RDMA (None: same host, shared memory)
    catch_up_on_start: bool = True  # after start, load the newest complete store version if newer (a restarted
    #                                 replica then serves what the others serve, not initial_version)
    weight_load: str = "auto"  # vLLM backend: "auto", "inplace" or "reload" (see WEIGHT_LOADS)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"GeneratorConfig.backend={self.backend!r}; valid backends: {list(BACKENDS)}")
        if self.weight_load not in WEIGHT_LOADS:
            raise ValueError(f"GeneratorConfig.weight_load={self.weight_load!r}; valid: {list(WEIGHT_LOADS)}")
        if not self.engine_args.get("model"):
            raise ValueError("GeneratorConfig.engine_args needs 'model': the folder of an HF model")
        if self.backend == "hf":
            unknown = set(self.sampling_params) - HF_SAMPLING_KEYS
            if unknown:
                raise ValueError(f"backend 'hf' does not implement sampling params {sorted(unknown)}; "
                                 f"it supports {sorted(HF_SAMPLING_KEYS)}")

    @classmethod
    def build(cls, engine_args: Any, sampling_params: Any = None, **kw) -> GeneratorConfig:
        """From dicts or vLLM objects (``AsyncEngineArgs`` / ``SamplingParams``)."""
        return cls(engine_args=_as_dict(engine_args, "EngineArgs"),
                   sampling_params=_as_dict(sampling_params, "SamplingParams"), **kw)


async def version_folder(config: GeneratorConfig, version: int) -> str:
    """The local store folder of policy ``version`` once it is complete (fetched over RDMA from
    ``config.weight_source`` when this host's store does not have it)."""
    import forge.store as ws

    prefix = ws.policy_prefix(version)
    if config.weight_source is not None and not ws.is_complete(prefix):
        from forge.store.rdma import fetch

        return await fetch(config.weight_source, prefix, timeout=config.update_timeout_s)
    return await ws.wait_complete(prefix, timeout=config.update_timeout_s)


async def catch_up(engine) -> None:
    """Load the newest complete policy version in the store if it is newer than what ``engine`` serves."""
    import forge.store as ws

    latest = ws.latest_version()
    if engine.config.catch_up_on_start and latest is not None and latest > engine.version:
        await engine.update_weights(latest)


def merge_sampling(defaults: dict[str, Any], override: Any) -> dict[str, Any]:
    """Per-call sampling params (dict or ``SamplingParams``) over the config's defaults."""
    out = dict(defaults)
    out.update(_as_dict(override, "SamplingParams"))
    if int(out.get("n", 1)) < 1:
        raise ValueError(f"sampling_params n={out['n']} must be >= 1")
    return out


def encode_prompt(tokenizer, prompt: Any) -> list[int]:
    """Token ids of ``prompt``: text, a list of token ids, or chat messages (rendered by the chat template).

    Text is encoded with the tokenizer's default special tokens, as vLLM does; chat messages are rendered with
    ``add_generation_prompt=True`` and encoded without adding special tokens again (the template has them).
    """
    if isinstance(prompt, str):
        return list(tokenizer.encode(prompt))
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(t, int) for t in prompt):
        vocab = len(tokenizer)
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        return list(prompt)
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        for m in prompt:
            if "role" not in m or "content" not in m:
                raise ValueError(f"chat message {m!r} needs 'role' and 'content' keys")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt is a list of chat messages but the tokenizer has no chat_template")
        text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
        return list(tokenizer.encode(text, add_special_tokens=False))
    raise TypeError(
        "prompt must be a non-empty str, a list of token ids (int) or a list of chat messages "
        f"({{'role': ..., 'content': ...}}), got {type(prompt).__name__}: {str(prompt)[:80]!r}"
    )


def load_tokenizer(engine_args: dict[str, Any]):
    """The HF tokenizer named by ``engine_args`` ("tokenizer", else "model"), as vLLM loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(engine_args.get("tokenizer") or engine_args["model"],
                                         trust_remote_code=bool(engine_args.get("trust_remote_code", False)))
