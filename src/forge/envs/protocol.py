"""The environment protocol for multi-turn episodes (issue 8, item 4).

An environment is a stateful object for one episode:

    obs = await env.reset(task)                      # Observation: the opening messages (system, user)
    obs, reward, done = await env.step(action_text)  # StepResult: messages to append, reward, episode over?

``reset`` and ``step`` are coroutines because tools (the code sandbox, remote services) are asynchronous. The
observation is a list of chat messages (``{"role": ..., "content": ...}``) that the rollout renders with the
tokenizer's chat template and appends after the model's turn; those tokens are environment tokens and never
trained on (``Episode.response_mask`` = 0). Rewards of all steps are summed into the episode's reward.

An environment that offers tools exposes them as ``env.tools`` (``forge.envs.tools.Tool`` objects) so the
rollout can pass their JSON schemas to chat templates that render tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

Message = dict[str, Any]  # {"role": "system" | "user" | "assistant" | "tool", "content": str, ...}


@dataclass
class Observation:
    """What the environment says: messages to append to the conversation, plus diagnostics."""

    messages: list[Message]  # reset: the opening conversation; step: messages after the model's turn
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"tool_calls": 1, "tool_errors": 0}


class StepResult(NamedTuple):
    """``step``'s answer; unpacks as ``observation, reward, done``."""

    observation: Observation
    reward: float
    done: bool


@runtime_checkable
class Environment(Protocol):
    """One episode of interaction. Implementations: ``forge.envs.multiturn.ToolEnv``."""

    async def reset(self, task: Any) -> Observation:
        """Start an episode on ``task``; returns the opening messages."""
        ...

    async def step(self, action: str) -> StepResult:
        """Apply the model's turn (its decoded text); returns what to append, the reward, and whether it ended."""
        ...
