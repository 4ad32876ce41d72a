"""``DatasetActor``: serves prompts to the rollout loops, ``prompt = await dataloader.sample.route()``.

A thin shell over :mod:`forge.data`: ``setup`` builds the dataset and its :class:`~forge.data.PromptSampler`;
``sample`` returns the next :class:`~forge.data.Sample` (``.prompt``, ``.target``, ``.metadata``; score a response
with ``forge.data.score_response(text, sample)``). ``state_dict``/``load_state_dict`` save and restore the sampling
position so that ``--resume`` continues the data order.
"""

from __future__ import annotations

from typing import Any

from monarch.actor import endpoint

from forge.controller.actor import ForgeActor
from forge.data import DatasetConfig, PromptSampler, Sample, build_dataset

__all__ = ["DatasetActor"]


class DatasetActor(ForgeActor):
    """Prompts from one :class:`DatasetConfig`, in a resumable shuffled order."""

    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg

    @endpoint
    async def setup(self) -> None:
        self.dataset = build_dataset(self.cfg)
        self.sampler = PromptSampler(len(self.dataset), seed=self.cfg.shuffle_seed, shuffle=self.cfg.shuffle)

    @endpoint
    async def sample(self) -> Sample:
        """The next prompt with its target and metadata."""
        return self.dataset[self.sampler.next_index()]

    @endpoint
    async def num_samples(self) -> int:
        return len(self.dataset)

    @endpoint
    async def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    @endpoint
    async def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
