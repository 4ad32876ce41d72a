"""Supervised fine-tuning data: tokenization with prompt masking, padding or packing into ``TextTrainBatch``.

Prompt masking: the loss is on the response only. A raw example is ``prompt_ids + response_ids + [eos]``; a chat
example is the chat template of ``messages + [assistant: target]``, split at the end of the generation prompt
(the assistant header), so the mask covers the answer and the end-of-turn token the model must learn to emit.

Targets are built per document (``target_ids = tokens[1:]``, ``input_ids = tokens[:-1]``), so a packed row never
asks the last token of one document to predict the first token of the next. ``pack_sft`` restarts
``position_ids`` at 0 at each document; with ``attention_mask=None`` and ``use_cache=False`` transformers turns the
restarts into a block-diagonal causal mask, so documents do not attend to each other either (checked in
tests/unit/data/test_sft.py; with a KV cache transformers skips that detection and documents would leak).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from forge.data.chat import to_messages
from forge.data.sample import PromptDataset, Sample
from forge.data.sampler import PromptSampler
from forge.types import TextTrainBatch

__all__ = ["SFTBatcher", "SFTExample", "collate_sft", "eval_batches", "pack_sft", "tokenize_sft"]


@dataclass(frozen=True)
class SFTExample:
    """One tokenized document: ``tokens`` [L] and ``loss_mask`` [L] (1 on response tokens)."""

    tokens: tuple[int, ...]
    loss_mask: tuple[int, ...]

    @property
    def num_positions(self) -> int:
        """Training positions this document fills (L - 1: every token but the last is an input)."""
        return len(self.tokens) - 1


def tokenize_sft(
    sample: Sample, tokenizer: Any, chat_template: bool = False, system_prompt: str | None = None,
    max_len: int | None = None,
) -> SFTExample:
    """Tokenize ``sample.prompt`` + ``sample.target``; the mask is 1 on the target (and EOS / end of turn) only.

    ``max_len`` truncates from the right (the prompt is kept). Raises ``ValueError`` if no target token remains.
    """
    if chat_template:
        messages = to_messages(sample.prompt, system_prompt)
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": sample.target}], tokenize=False
        )
        if not full_text.startswith(prompt_text):
            raise ValueError("the chat template renders the prompt differently with and without the answer; "
                             "prompt masking needs the generation prompt to be a prefix of the full chat")
        prompt_ids = _encode(tokenizer, prompt_text)
        response_ids = _encode(tokenizer, full_text[len(prompt_text):])
    else:
        if not isinstance(sample.prompt, str):
            raise TypeError("a chat-message prompt needs chat_template=True (and a tokenizer with a template)")
        prompt_ids = _encode(tokenizer, sample.prompt)
        if tokenizer.eos_token_id is None:
            raise ValueError("raw SFT examples end with EOS, but the tokenizer has no eos_token_id")
        response_ids = _encode(tokenizer, sample.target) + [tokenizer.eos_token_id]
    tokens = prompt_ids + response_ids
    mask = [0] * len(prompt_ids) + [1] * len(response_ids)
    if max_len is not None:
        tokens, mask = tokens[:max_len], mask[:max_len]
    if sum(mask[1:]) == 0:
        raise ValueError(f"example has no response token left to train on (prompt {len(prompt_ids)} tokens, "
                         f"max_len={max_len}): {str(sample.prompt)[:80]!r}")
    return SFTExample(tuple(tokens), tuple(mask))


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def collate_sft(examples: Sequence[SFTExample], pad_id: int, seq_len: int | None = None) -> TextTrainBatch:
    """One document per row, right padded to ``seq_len`` (default: the longest). Rows are [B, T], T = L - 1."""
    width = seq_len if seq_len is not None else max(e.num_positions for e in examples)
    rows = [[e] for e in examples]
    return _build(rows, pad_id, width, positions_restart=False)


def pack_sft(rows: Sequence[Sequence[SFTExample]], pad_id: int, seq_len: int) -> TextTrainBatch:
    """Several documents per row (each inner list one row, filled in order), right padded to ``seq_len``.

    ``position_ids`` restart at 0 for every document and for the padding tail.
    """
    return _build(rows, pad_id, seq_len, positions_restart=True)


def _build(rows: Sequence[Sequence[SFTExample]], pad_id: int, width: int, positions_restart: bool) -> TextTrainBatch:
    B = len(rows)
    input_ids = torch.full((B, width), pad_id, dtype=torch.long)
    target_ids = torch.full((B, width), pad_id, dtype=torch.long)
    target_mask = torch.zeros((B, width), dtype=torch.float32)
    position_ids = torch.zeros((B, width), dtype=torch.long)
    for b, docs in enumerate(rows):
        start = 0
        for doc in docs:
            n = doc.num_positions
            if start + n > width:
                raise ValueError(f"row {b}: documents need {start + n} positions, more than seq_len={width}")
            input_ids[b, start : start + n] = torch.tensor(doc.tokens[:-1])
            target_ids[b, start : start + n] = torch.tensor(doc.tokens[1:])
            target_mask[b, start : start + n] = torch.tensor(doc.loss_mask[1:], dtype=torch.float32)
            position_ids[b, start : start + n] = torch.arange(n)
            start += n
        position_ids[b, start:] = torch.arange(width - start) if positions_restart else torch.arange(start, width)
    return TextTrainBatch(input_ids, target_ids, target_mask, position_ids=position_ids if positions_restart else None)


class SFTBatcher:
    """Endless SFT batches over a prompt dataset in :class:`PromptSampler` order (resumable).

    ``pack=False``: ``batch_size`` documents per batch, padded to the longest (capped at ``seq_len``).
    ``pack=True``: ``batch_size`` rows of exactly ``seq_len`` positions, each filled greedily with whole documents
    in sampler order; a document that does not fit the current row starts the next one (documents are never split).
    """

    def __init__(
        self, dataset: PromptDataset, tokenizer: Any, batch_size: int, seq_len: int, pack: bool = False,
        chat_template: bool = False, system_prompt: str | None = None, seed: int = 0, shuffle: bool = True,
    ) -> None:
        self.dataset, self.tokenizer = dataset, tokenizer
        self.batch_size, self.seq_len, self.pack = batch_size, seq_len, pack
        self.chat_template, self.system_prompt = chat_template, system_prompt
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.sampler = PromptSampler(len(dataset), seed=seed, shuffle=shuffle)
        self._pending: int | None = None  # index drawn but not yet placed (did not fit the previous packed batch)
        self._cache: dict[int, SFTExample] = {}

    def example(self, index: int) -> SFTExample:
        """Tokenized document ``index`` (cached), truncated to ``seq_len + 1`` tokens."""
        if index not in self._cache:
            self._cache[index] = tokenize_sft(self.dataset[index], self.tokenizer, self.chat_template,
                                              self.system_prompt, max_len=self.seq_len + 1)
        return self._cache[index]

    def _draw(self) -> int:
        if self._pending is not None:
            idx, self._pending = self._pending, None
            return idx
        return self.sampler.next_index()

    def next_batch(self) -> TextTrainBatch:
        """The next batch ([B, T] tensors; see the class docstring)."""
        if not self.pack:
            docs = [self.example(self._draw()) for _ in range(self.batch_size)]
            return collate_sft(docs, self.pad_id, min(self.seq_len, max(d.num_positions for d in docs)))
        rows: list[list[SFTExample]] = [[] for _ in range(self.batch_size)]
        for row in rows:
            used = 0
            while True:
                idx = self._draw()
                doc = self.example(idx)
                if used + doc.num_positions > self.seq_len and row:
                    self._pending = idx
                    break
                row.append(doc)
                used += doc.num_positions
        return pack_sft(rows, self.pad_id, self.seq_len)

    def __iter__(self) -> Iterator[TextTrainBatch]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "pending": self._pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self._pending = state["pending"]


def eval_batches(
    dataset: PromptDataset, tokenizer: Any, batch_size: int, seq_len: int, chat_template: bool = False,
    system_prompt: str | None = None,
) -> Iterator[TextTrainBatch]:
    """Every document of ``dataset`` once, in order, ``batch_size`` per padded batch (for eval loss)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for i in range(0, len(dataset), batch_size):
        docs = [tokenize_sft(dataset[j], tokenizer, chat_template, system_prompt, max_len=seq_len + 1)
                for j in range(i, min(i + batch_size, len(dataset)))]
        yield collate_sft(docs, pad_id, max(d.num_positions for d in docs))
