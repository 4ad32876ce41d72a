"""``PromptSampler``: an endless, reshuffled-per-epoch order over a dataset, with a saveable position.

Epoch ``e`` visits every index once in the order ``random.Random(seed + e)`` gives, so the order depends only on
``(seed, epoch, position)``: :meth:`state_dict` holds exactly those, and a resumed run (``--resume``) continues with
the same next prompt the interrupted run would have drawn.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

__all__ = ["PromptSampler"]


class PromptSampler:
    """Yields dataset indices forever (``shuffle=False``: 0..n-1 repeated)."""

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_items <= 0:
            raise ValueError(f"PromptSampler needs at least one item, got num_items={num_items}")
        self.num_items, self.seed, self.shuffle = num_items, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._make_order(0)

    def _make_order(self, epoch: int) -> list[int]:
        order = list(range(self.num_items))
        if self.shuffle:
            random.Random(self.seed + epoch).shuffle(order)
        return order

    def next_index(self) -> int:
        """The next index, starting a new (reshuffled) epoch after the last one."""
        if self.position >= self.num_items:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._make_order(self.epoch)
        idx = self._order[self.position]
        self.position += 1
        return idx

    def __iter__(self) -> Iterator[int]:
        while True:
            yield self.next_index()

    def state_dict(self) -> dict[str, Any]:
        """Everything that determines the rest of the order."""
        return {"num_items": self.num_items, "seed": self.seed, "shuffle": self.shuffle,
                "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; refuses a state saved for a different dataset size or seed."""
        mine = (self.num_items, self.seed, self.shuffle)
        theirs = (state["num_items"], state["seed"], state["shuffle"])
        if mine != theirs:
            raise ValueError(f"sampler state is for (num_items, seed, shuffle)={theirs}, this sampler is {mine}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._make_order(self.epoch)
