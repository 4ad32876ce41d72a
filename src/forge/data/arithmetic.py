"""The synthetic arithmetic task of the CPU demo (../../shared/FACTS.md, "A CPU demo that learns").

``a+b`` with a, b in 0..99, operands zero-padded to two digits: prompt ``"07+42="``, target ``"49"`` (the
response is the answer then EOS). The 10,000 ordered pairs are shuffled with ``seed`` and split 40% SFT,
30% RL prompts, 30% held-out test; the split is deterministic and the three parts are disjoint.
"""

from __future__ import annotations

import random

from forge.data.sample import PromptDataset, Sample

__all__ = ["ARITHMETIC_SPLITS", "arithmetic_dataset", "arithmetic_pairs", "arithmetic_sample"]

ARITHMETIC_SPLITS = {"sft": (0.0, 0.4), "rl": (0.4, 0.7), "test": (0.7, 1.0)}  # fractions of the shuffled pairs
_MAX_OPERAND = 99


def arithmetic_sample(a: int, b: int, scorer: str = "exact") -> Sample:
    """The sample for ``a + b``: prompt ``f"{a:02d}+{b:02d}="``, target ``str(a + b)``, scored by ``scorer``
    (``exact`` match, or ``digits``: exact with partial credit per digit, a shaped reward for RL)."""
    if not (0 <= a <= _MAX_OPERAND and 0 <= b <= _MAX_OPERAND):
        raise ValueError(f"operands must be in 0..{_MAX_OPERAND}, got {a} and {b}")
    if scorer not in ("exact", "digits"):
        raise ValueError(f"arithmetic scorer must be 'exact' or 'digits', got {scorer!r}")
    return Sample(f"{a:02d}+{b:02d}=", str(a + b), {"task": scorer, "a": a, "b": b})


def arithmetic_pairs(split: str, seed: int = 0) -> list[tuple[int, int]]:
    """The (a, b) pairs of ``split`` ("sft", "rl" or "test") for ``seed``, in shuffled order."""
    if split not in ARITHMETIC_SPLITS:
        raise ValueError(f"unknown arithmetic split {split!r}; choose one of {list(ARITHMETIC_SPLITS)}")
    pairs = [(a, b) for a in range(_MAX_OPERAND + 1) for b in range(_MAX_OPERAND + 1)]
    random.Random(seed).shuffle(pairs)
    lo, hi = ARITHMETIC_SPLITS[split]
    return pairs[round(lo * len(pairs)) : round(hi * len(pairs))]


def arithmetic_dataset(split: str, seed: int = 0, max_samples: int | None = None,
                       scorer: str = "exact") -> PromptDataset:
    """The arithmetic samples of ``split`` (the first ``max_samples`` of it when given), scored by ``scorer``."""
    pairs = arithmetic_pairs(split, seed)[:max_samples]
    return PromptDataset([arithmetic_sample(a, b, scorer) for a, b in pairs], name=f"arithmetic/{split}")
