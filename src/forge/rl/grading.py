"""Graders: reward functions of (prompt, completion, metadata), usable as plain callables or in RewardActor.

    from forge.rl.grading import MathReward, FormatReward, WeightedReward, RewardActor
    reward = WeightedReward({"math": (MathReward(), 1.0), "format": (FormatReward(), 0.1)})
    r = reward("What is 2+3?", "<think>2+3=5</think> <answer>5</answer>", {"target": "5"})     # 1.1
    result = reward.evaluate(prompt, completion, metadata)   # RewardResult(total, components)
    result.metrics                                           # {"reward/total": 1.1, "reward/math": 1.0, ...}

    actor = await RewardActor.options(procs=1).as_actor(grader=reward)   # the same grader as a Monarch actor
    await actor.evaluate_response.call_one(prompt=p, response=text, target="5")

The reference answer travels in ``metadata["target"]`` (``RewardActor.evaluate_response(target=...)`` puts it
there). A custom grader subclasses ``Grader`` (or ``RewardActor``, as in the seeds) and implements
``grade(prompt, completion, metadata) -> float``.

``RewardActor`` is defined in ``forge.actors.reward`` and re-exported here lazily (module ``__getattr__``), so
importing ``forge.rl`` never imports Monarch.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from forge.rl.rewards import extract_answer, math_equal, overlong_penalty


@dataclass(frozen=True)
class RewardResult:
    """A total reward and its unweighted components (for metrics and ``Episode.reward_components``)."""

    total: float
    components: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        """``reward/total`` and one ``reward/<component>`` per component."""
        return {"reward/total": self.total, **{f"reward/{k}": v for k, v in self.components.items()}}


def with_target(metadata: dict[str, Any] | None, target: Any = None) -> dict[str, Any]:
    """A copy of ``metadata`` with ``target`` (the reference answer) stored under ``"target"`` if given."""
    merged = dict(metadata or {})
    if target is not None:
        merged["target"] = target
    return merged


class Grader(ABC):
    """A reward function; subclasses implement ``grade``. ``name`` labels its metric (``reward/<name>``)."""

    name: str = "reward"

    @abstractmethod
    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        """The reward of ``completion`` (response text) to ``prompt``; ``metadata`` holds e.g. ``target``."""

    def evaluate(self, prompt: Any, completion: str, metadata: dict[str, Any] | None = None) -> RewardResult:
        value = float(self.grade(prompt, completion, metadata or {}))
        return RewardResult(value, {self.name: value})

    def __call__(self, prompt: Any, completion: str, metadata: dict[str, Any] | None = None) -> float:
        return float(self.grade(prompt, completion, metadata or {}))


def _target(metadata: dict[str, Any], grader: str) -> str:
    if "target" not in metadata:
        raise KeyError(
            f"{grader} needs the reference answer in metadata['target'] (pass target= to evaluate_response), "
            f"got metadata keys {sorted(metadata)}"
        )
    return str(metadata["target"])


@dataclass(frozen=True)
class MathReward(Grader):
    """1 if the response's final answer equals ``metadata['target']`` mathematically, else 0 (math-verify).

    The answer is the last \\boxed{}, <answer></answer>, #### N, or the last number (``extract_answer``).
    """

    correct: float = 1.0  # reward for a correct answer
    incorrect: float = 0.0  # reward for a wrong or missing answer
    name: str = "math"  # metric label

    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        target = _target(metadata, "MathReward")
        answer = extract_answer(completion)
        gold = extract_answer(target) if ("\\boxed" in target or "####" in target) else target
        ok = answer is not None and gold is not None and math_equal(answer, gold)
        return self.correct if ok else self.incorrect


THINK_ANSWER_FORMAT = r"\s*<think>.+?</think>\s*<answer>.+?</answer>\s*"


@dataclass(frozen=True)
class FormatReward(Grader):
    """1 if the whole response matches ``pattern`` (default: <think>…</think> <answer>…</answer>), else 0."""

    pattern: str = THINK_ANSWER_FORMAT  # regular expression the whole response must match (re.DOTALL)
    name: str = "format"  # metric label

    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        return 1.0 if re.fullmatch(self.pattern, completion, flags=re.DOTALL) else 0.0


@dataclass(frozen=True)
class ThinkingReward(Grader):
    """1 if the response has a closed <think>…</think> block of at least ``min_chars`` characters, else 0."""

    min_chars: int = 1  # shortest reasoning (stripped characters) that counts
    open_tag: str = "<think>"  # start of the reasoning block
    close_tag: str = "</think>"  # end of the reasoning block
    name: str = "thinking"  # metric label

    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        start = completion.find(self.open_tag)
        end = completion.find(self.close_tag, start + len(self.open_tag)) if start != -1 else -1
        if end == -1:
            return 0.0
        return 1.0 if len(completion[start + len(self.open_tag) : end].strip()) >= self.min_chars else 0.0


@dataclass(frozen=True)
class OverlongReward(Grader):
    """DAPO's overlong shaping (``rewards.overlong_penalty``) of ``metadata['response_len']`` (in tokens)."""

    max_len: int  # Lmax: the generation limit in tokens
    cache_len: int  # Lc: the soft-penalty interval below Lmax
    name: str = "overlong"  # metric label

    def __post_init__(self) -> None:
        overlong_penalty(0, self.max_len, self.cache_len)  # validates the two lengths

    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        if "response_len" not in metadata:
            raise KeyError("OverlongReward needs the response length in tokens in metadata['response_len']")
        return overlong_penalty(int(metadata["response_len"]), self.max_len, self.cache_len)


class WeightedReward(Grader):
    """Σ_k w_k · grader_k, with every unweighted component reported (``evaluate(...).metrics``)."""

    name = "total"

    def __init__(self, components: dict[str, tuple[Grader, float]]):
        if not components:
            raise ValueError("WeightedReward needs at least one component: {name: (grader, weight)}")
        for key, value in components.items():
            if not (
                isinstance(value, tuple) and len(value) == 2 and callable(getattr(value[0], "grade", None))
            ):
                raise TypeError(f"component {key!r} must be (grader, weight), got {value!r}")
        self.components = {k: (g, float(w)) for k, (g, w) in components.items()}

    def evaluate(self, prompt: Any, completion: str, metadata: dict[str, Any] | None = None) -> RewardResult:
        metadata = metadata or {}
        parts = {k: float(g.grade(prompt, completion, metadata)) for k, (g, _) in self.components.items()}
        total = sum(self.components[k][1] * v for k, v in parts.items())
        return RewardResult(total, parts)

    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        return self.evaluate(prompt, completion, metadata).total


def __getattr__(name: str):
    # Lazy re-export (docs/DESIGN.md): the actor shell lives in forge.actors and needs Monarch.
    if name == "RewardActor":
        from forge.actors.reward import RewardActor

        return RewardActor
    raise AttributeError(f"module 'forge.rl.grading' has no attribute {name!r}")


__all__ = [
    "Grader",
    "RewardResult",
    "MathReward",
    "FormatReward",
    "ThinkingReward",
    "OverlongReward",
    "WeightedReward",
    "with_target",
]
