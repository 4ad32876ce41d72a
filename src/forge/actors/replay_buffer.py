"""``ReplayBuffer``: the actor shell over ``forge.rl.replay.ReplayBufferCore`` (one endpoint = one line).

buffer = await ReplayBuffer.options(procs=1).as_actor(batch_size=64, max_policy_age=1, dp_size=2)
await buffer.add.call_one(episodes)                          # whole groups, one Episode or a list
shards = await buffer.sample.call_one(curr_policy_version=v)  # dp_size lists of Episodes, or None
"""

from __future__ import annotations

from typing import Any

from monarch.actor import endpoint

from forge.controller.actor import ForgeActor
from forge.rl.replay import ReplayBufferConfig, ReplayBufferCore
from forge.types import Episode

__all__ = ["ReplayBuffer", "ReplayBufferConfig"]


class ReplayBuffer(ForgeActor):
    """Stores whole groups of episodes; samples dp-sharded batches (see ``forge.rl.replay``)."""

    def __init__(self, config: ReplayBufferConfig | None = None, **fields: Any) -> None:
        self.buffer = ReplayBufferCore(config if config is not None else ReplayBufferConfig(**fields))

    @endpoint
    async def add(self, episodes: Episode | list[Episode]) -> None:
        self.buffer.add(episodes)

    @endpoint
    async def sample(
        self, curr_policy_version: int, batch_size: int | None = None
    ) -> list[list[Episode]] | None:
        return self.buffer.sample(curr_policy_version, batch_size)

    @endpoint
    async def evict(self, curr_policy_version: int) -> int:
        return self.buffer.evict(curr_policy_version)

    @endpoint
    async def num_episodes(self) -> int:
        return len(self.buffer)

    @endpoint
    async def metrics(self) -> dict[str, float]:
        return self.buffer.metrics()

    @endpoint
    async def clear(self) -> None:
        self.buffer.clear()

    @endpoint
    async def state_dict(self) -> dict[str, Any]:
        return self.buffer.state_dict()

    @endpoint
    async def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state)
