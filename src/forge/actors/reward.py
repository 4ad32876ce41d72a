"""``RewardActor``: scores responses on a Monarch actor or service (one endpoint = one line into a grader).

Two ways to use it, both as in the seeds:

    class MyReward(RewardActor):                       # subclass and implement grade()
        def grade(self, prompt, completion, metadata) -> float: ...

    reward = await RewardActor.options(num_replicas=2).as_service(grader=MathReward())   # or wrap a grader
    r = await reward.evaluate_response.route(prompt=p, response=text, target="42")

The reference answer ``target`` is put into ``metadata["target"]`` before grading. Graders live in
``forge.rl.grading`` (plain Python, testable without Monarch).
"""

from __future__ import annotations

from typing import Any

from monarch.actor import endpoint

from forge.controller.actor import ForgeActor
from forge.rl.grading import Grader, RewardResult, with_target

__all__ = ["RewardActor"]


class RewardActor(ForgeActor):
    """Grades responses with ``self.grade``: the given ``grader``'s, or a subclass's own."""

    def __init__(self, grader: Grader | None = None) -> None:
        if grader is None and type(self).grade is RewardActor.grade:
            raise TypeError(
                f"{type(self).__name__} needs grader=<a forge.rl.grading.Grader> or a grade() override"
            )
        self.grader = grader

    def grade(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> float:
        """The reward of ``completion`` to ``prompt``; subclasses override this."""
        return self.grader.grade(prompt, completion, metadata)

    def _evaluate(self, prompt: Any, completion: str, metadata: dict[str, Any]) -> RewardResult:
        if self.grader is not None and type(self).grade is RewardActor.grade:
            return self.grader.evaluate(prompt, completion, metadata)  # keeps per-component values
        value = float(self.grade(prompt, completion, metadata))
        return RewardResult(value, {type(self).__name__: value})

    @endpoint
    async def evaluate_response(
        self, prompt: Any, response: str, target: Any = None, metadata: dict[str, Any] | None = None
    ) -> float:
        """The total reward (a float), as in the seeds."""
        return float(self.grade(prompt, response, with_target(metadata, target)))

    @endpoint
    async def evaluate(
        self, prompt: Any, response: str, target: Any = None, metadata: dict[str, Any] | None = None
    ) -> RewardResult:
        """The total reward and its components (``result.metrics`` gives ``reward/<name>`` keys)."""
        return self._evaluate(prompt, response, with_target(metadata, target))
