"""Final-answer extraction and comparison for math-style tasks (GSM8K ``#### N``, ``\\boxed{}``, ``<answer>``)."""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["answers_match", "extract_final_answer", "parse_gsm8k_answer"]

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_gsm8k_answer(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution (commas and ``$`` removed): ``"... #### 1,200"`` → ``"1200"``."""
    if "####" not in solution:
        raise ValueError(f"GSM8K answer has no '#### N' final line: {solution[-80:]!r}")
    return _normalize(solution.rsplit("####", 1)[1].strip())


def extract_final_answer(text: str) -> str | None:
    """The final answer of a response: ``<answer>x</answer>``, then ``\\boxed{x}``, then ``#### x``, then the last
    number in the text; ``None`` when there is none."""
    tag = re.findall(r"<answer>\s*(.*?)\s*</answer>", text, flags=re.DOTALL)
    if tag:
        return tag[-1].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        if tail:
            return tail.splitlines()[0].strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _normalize(text: str) -> str:
    text = text.strip().rstrip(".").replace(",", "").replace("$", "").strip()
    return text


def _as_number(text: str) -> Fraction | None:
    t = _normalize(text)
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(pred: str, gold: str) -> bool:
    """Numeric equality when both parse as numbers (``"1,200.0"`` == ``"1200"``), else math-verify, else text."""
    a, b = _as_number(pred), _as_number(gold)
    if a is not None and b is not None:
        return a == b
    try:
        from math_verify import parse, verify

        return bool(verify(parse(gold), parse(pred)))
    except Exception:  # math-verify raises on unparsable input; fall back to text equality
        return _normalize(pred) == _normalize(gold)
