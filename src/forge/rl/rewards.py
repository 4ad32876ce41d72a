"""Pure reward functions: answer extraction, math equivalence (math-verify) and DAPO's overlong shaping.

These are functions of strings and numbers, used by the graders in ``forge.rl.grading``.

Answer extraction (``extract_answer``) looks, in this order, for the last ``\\boxed{...}`` (braces balanced),
the last ``<answer>...</answer>``, the last GSM8K-style ``#### N`` line, and finally the last number in the
text. Equivalence (``math_equal``) is math-verify's (``verify(parse(gold), parse(pred))``: fractions,
decimals, thousands separators, LaTeX expressions), falling back to a normalised string comparison when
math-verify parses neither side. math-verify bounds its own run time with ``signal.alarm``, which only works
in the main thread; in any other thread (e.g. inside an actor's event loop) it runs without a time limit, so
answers longer than ``MAX_ANSWER_CHARS`` are rejected up front instead.
"""

from __future__ import annotations

import logging
import re
import threading

MAX_ANSWER_CHARS = 1000  # longer "answers" are not graded (keeps the sympy work bounded without a timeout)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K = re.compile(r"####\s*([^\n]+)")

# math-verify warns when its timeout is disabled; we disable it deliberately off the main thread.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces balanced), or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def extract_answer(text: str) -> str | None:
    """The final answer in a response: \\boxed{} > <answer></answer> > #### N > last number; None if none."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    gsm = _GSM8K.findall(text)
    if gsm:
        return gsm[-1].strip().rstrip(".")
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _normalise(answer: str) -> str:
    s = answer.strip().strip("$").strip().rstrip(".").replace(",", "").replace(" ", "")
    return s[:-2] if s.endswith(".0") else s


def _parse(expr: str, timeout: int | None):
    from math_verify import parse  # imported lazily: sympy takes ~1 s to import

    delimited = expr if expr.startswith("$") else f"${expr}$"
    return parse(delimited, parsing_timeout=timeout) or parse(expr, parsing_timeout=timeout)


def math_equal(pred: str, gold: str) -> bool:
    """Whether answer ``pred`` equals reference ``gold`` mathematically (e.g. "0.5" and "\\frac12")."""
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    if _normalise(pred) == _normalise(gold):
        return True
    from math_verify import verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed, pred_parsed = _parse(gold, timeout), _parse(pred, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def overlong_penalty(length: int, max_len: int, cache_len: int) -> float:
    """DAPO's soft overlong punishment (arXiv:2503.14476 eq. 13) for a response of ``length`` tokens.

    R(L) = 0 for L ≤ Lmax − Lc;  ((Lmax − Lc) − L) / Lc for Lmax − Lc < L ≤ Lmax;  −1 for L > Lmax.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(
            f"overlong shaping needs 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}"
        )
    if length < 0:
        raise ValueError(f"length must be >= 0 tokens, got {length}")
    expected = max_len - cache_len
    if length <= expected:
        return 0.0
    if length <= max_len:
        return (expected - length) / cache_len
    return -1.0
