"""Tiny random causal LMs, built locally and saved as Hugging Face directories.

No model hub is reachable on the machines forge is developed and tested on, so tests, demos and benchmarks build
their models here: a Llama- or Qwen2-architecture config with random weights plus a byte-level tokenizer
(one token per byte, exact round trip, a ChatML chat template), saved with ``save_pretrained`` so that
``transformers``, vLLM and forge's trainer all load it like any hub checkpoint.

The byte-level tokenizer is deliberate: with one token per character, arithmetic tasks are learnable by a
0.5M-parameter model in seconds (see ../../shared/FACTS.md, "A CPU demo that learns").
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of a tiny random model. Defaults: the 0.53M-parameter Llama of the CPU demo."""

    arch: str = "llama"  # "llama" or "qwen2"
    hidden_size: int = 128  # model width
    num_layers: int = 2  # transformer blocks
    num_heads: int = 4  # attention heads
    num_kv_heads: int = 4  # key/value heads (GQA when < num_heads)
    intermediate_size: int = 512  # MLP width
    max_position_embeddings: int = 512  # longest sequence
    tie_word_embeddings: bool = False  # share input and output embeddings
    seed: int = 0  # weight init seed
    dtype: str = "float32"  # saved dtype


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character map (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def build_byte_tokenizer(out_dir: str | os.PathLike | None = None):
    """A byte-level BPE tokenizer with no merges: ids 0..255 are bytes, then the special tokens.

    Returns a ``transformers.PreTrainedTokenizerFast`` (saved to ``out_dir`` when given).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = _bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    for i, tok in enumerate(SPECIAL_TOKENS):
        vocab[tok] = 256 + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token=None,
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    hf.chat_template = CHATML_TEMPLATE
    if out_dir is not None:
        hf.save_pretrained(str(out_dir))
    return hf


def build_tiny_model(out_dir: str | os.PathLike, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Build a random model + byte tokenizer and save both as an HF directory; returns the directory.

    Idempotent: if ``out_dir`` already holds a model built from the same spec, it is reused.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    out = Path(out_dir)
    stamp = out / "forge_tiny_spec.json"
    if stamp.exists() and json.loads(stamp.read_text()) == asdict(spec) and (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = build_byte_tokenizer(out)
    common = dict(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
        dtype=spec.dtype,
    )
    if spec.arch == "llama":
        config = LlamaConfig(**common)
    elif spec.arch == "qwen2":
        config = Qwen2Config(**common)
    else:
        raise ValueError(f"TinyModelSpec.arch={spec.arch!r} is not supported; use 'llama' or 'qwen2'")
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, spec.dtype))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    stamp.write_text(json.dumps(asdict(spec)))
    return out
