"""Loaders that turn files and Hugging Face datasets into a :class:`PromptDataset`.

* :func:`load_jsonl` — one JSON object per line: ``{prompt_key, target_key}`` or chat rows ``{"messages": [...]}``
  (the prompt is every message before the last assistant turn, the target that turn's content).
* :func:`load_hf` — ``datasets``: a local file (``.jsonl``/``.json``/``.csv``/``.parquet``), a directory written by
  ``save_to_disk``, or a hub name (checked for reachability first, so an offline machine gets a clear error at once
  instead of ~25 s of retries).
* :func:`load_gsm8k` — the GSM8K format (``question``; ``answer`` ending in ``#### N``), from a local file or the hub.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from forge.data.answers import parse_gsm8k_answer
from forge.data.sample import PromptDataset, Sample

__all__ = ["HubUnreachableError", "load_gsm8k", "load_hf", "load_jsonl", "rows_to_samples"]

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class HubUnreachableError(ConnectionError):
    """The Hugging Face hub cannot be reached (offline machine or ``HF_HUB_OFFLINE=1``)."""


def rows_to_samples(
    rows: Iterable[Mapping[str, Any]],
    prompt_key: str = "prompt",
    target_key: str = "answer",
    task: str = "numeric",
    source: str = "rows",
) -> list[Sample]:
    """Convert mappings to samples; a row with ``messages`` is read as a chat (see the module docstring)."""
    samples = []
    for i, row in enumerate(rows):
        if "messages" in row and prompt_key not in row:
            prompt, target = _split_chat(row["messages"], f"{source} row {i}")
        else:
            missing = [k for k in (prompt_key, target_key) if k not in row]
            if missing:
                raise KeyError(f"{source} row {i} has no key(s) {missing}; its keys are {sorted(row)} "
                               f"(set prompt_key/target_key, or give chat rows a 'messages' list)")
            prompt, target = row[prompt_key], str(row[target_key])
        meta = {"task": task, "source": source, "index": i}
        samples.append(Sample(prompt, target, meta))
    return samples


def _split_chat(messages: Any, where: str) -> tuple[list[dict[str, str]], str]:
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) and "role" in m for m in messages):
        raise ValueError(f"{where}: 'messages' must be a list of {{'role', 'content'}} objects")
    last = max((j for j, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError(f"{where}: chat row has no assistant message to use as the target")
    return [dict(m) for m in messages[:last]], str(messages[last]["content"])


def load_jsonl(
    path: str | os.PathLike, prompt_key: str = "prompt", target_key: str = "answer", task: str = "numeric"
) -> PromptDataset:
    """Read a JSON-lines file; errors name the file and line number of a bad row."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"jsonl dataset {str(p)!r} does not exist")
    rows = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{n}: not valid JSON ({e.msg}): {line[:80]!r}") from e
    return PromptDataset(rows_to_samples(rows, prompt_key, target_key, task, source=str(p)), name=p.stem)


def hub_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    """Whether the hub resolves and accepts a TCP connection (and ``HF_HUB_OFFLINE`` is not set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _load_hf_rows(name_or_path: str, split: str, subset: str | None) -> Iterable[Mapping[str, Any]]:
    import datasets

    p = Path(name_or_path)
    if p.is_file():
        fmt = _LOCAL_FORMATS.get(p.suffix)
        if fmt is None:
            raise ValueError(f"{p}: unsupported file type {p.suffix!r}; use one of {sorted(_LOCAL_FORMATS)}")
        return datasets.load_dataset(fmt, data_files=str(p), split="train")
    if p.is_dir():
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise KeyError(f"{p} has splits {list(ds)}, not {split!r}")
            ds = ds[split]
        return ds
    if name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset path {name_or_path!r} does not exist")
    if not hub_reachable():
        raise HubUnreachableError(
            f"cannot load {name_or_path!r}: the Hugging Face hub is not reachable from this machine "
            f"(or HF_HUB_OFFLINE is set). Download it elsewhere and pass a local file or save_to_disk directory."
        )
    return datasets.load_dataset(name_or_path, subset, split=split)


def load_hf(
    name_or_path: str,
    split: str = "train",
    prompt_key: str = "prompt",
    target_key: str = "answer",
    subset: str | None = None,
    task: str = "numeric",
) -> PromptDataset:
    """Load with ``datasets`` (local file, ``save_to_disk`` directory, or hub name) and convert rows to samples."""
    rows = _load_hf_rows(name_or_path, split, subset)
    return PromptDataset(rows_to_samples(rows, prompt_key, target_key, task, source=name_or_path),
                         name=f"{Path(name_or_path).stem}/{split}")


def load_gsm8k(name_or_path: str = "openai/gsm8k", split: str = "train") -> PromptDataset:
    """GSM8K rows (``question``, ``answer`` = worked solution ending ``#### N``) → prompt = question, target = N.

    ``metadata["solution"]`` keeps the worked solution (for SFT on reasoning traces).
    """
    rows = _load_hf_rows(name_or_path, split, "main" if not Path(name_or_path).exists() else None)
    samples = []
    for i, row in enumerate(rows):
        if "question" not in row or "answer" not in row:
            raise KeyError(f"{name_or_path} row {i} is not GSM8K-shaped: keys {sorted(row)}, need question/answer")
        target = parse_gsm8k_answer(row["answer"])
        meta = {"task": "numeric", "source": name_or_path, "index": i, "solution": row["answer"]}
        samples.append(Sample(row["question"], target, meta))
    return PromptDataset(samples, name=f"gsm8k/{split}")
