"""The replay buffer core (plain Python; ``forge.actors.replay_buffer.ReplayBuffer`` is its actor shell).

It stores whole groups (the episodes sampled from one prompt, keyed by ``Episode.group_id``) and hands out
training batches of whole groups:

* ``add(episodes)`` files episodes under their group. With ``dynamic_sampling`` (DAPO §3.2, arXiv:2503.14476),
  a group is held back until ``group_size`` episodes have arrived and then dropped if all its rewards are
  equal — such a group has zero advantage everywhere and contributes no gradient (counted in
  ``buffer/dropped_zero_variance``).
* ``sample(curr_policy_version)`` first evicts every episode with
  ``curr_policy_version − policy_version > max_policy_age`` (``buffer/evicted_stale``), then draws random
  whole groups (seeded) until exactly ``batch_size`` episodes are taken, removes them from the buffer, and
  returns them as ``dp_size`` shards of ``batch_size / dp_size`` episodes (a list of lists), or ``None``
  if not enough are stored.
* ``state_dict()`` / ``load_state_dict()`` capture the stored episodes, counters and the sampler's RNG, so a
  resumed run draws the same batches.

Each episode is trained on once (sampling removes it). Groups are not split across batches, but a batch is
split into shards by position, so one group can straddle two data-parallel ranks (advantages are computed
before ``add``, so nothing downstream needs the whole group on one rank).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from forge.types import Episode


@dataclass(frozen=True)
class ReplayBufferConfig:
    """How the replay buffer batches, ages out and filters episodes."""

    batch_size: int  # episodes per training step, over all data-parallel ranks (a multiple of dp_size)
    max_policy_age: int = 0  # evict episodes with curr_policy_version - policy_version > max_policy_age
    dp_size: int = 1  # number of shards a sampled batch is split into (the trainer's data-parallel size)
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal (DAPO dynamic sampling)
    group_size: int | None = None  # episodes per complete group; needed by dynamic_sampling
    max_size: int | None = (
        None  # cap on stored episodes; the oldest groups are dropped beyond it (None = no cap)
    )
    seed: int = 0  # seed of the group sampler

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.dp_size < 1 or self.batch_size % self.dp_size:
            raise ValueError(
                f"batch_size must be a positive multiple of dp_size, got batch_size={self.batch_size}, "
                f"dp_size={self.dp_size}"
            )
        if self.max_policy_age < 0:
            raise ValueError(f"max_policy_age must be >= 0, got {self.max_policy_age}")
        if self.dynamic_sampling and (self.group_size is None or self.group_size < 2):
            raise ValueError(
                "dynamic_sampling needs group_size >= 2 (the number of responses per prompt) to know when a "
                f"group is complete, got group_size={self.group_size}"
            )
        if self.max_size is not None and self.max_size < self.batch_size:
            raise ValueError(f"max_size ({self.max_size}) must be >= batch_size ({self.batch_size})")


class ReplayBufferCore:
    """Stores whole groups of episodes; samples dp-sharded batches of whole groups (see module docstring)."""

    def __init__(self, config: ReplayBufferConfig):
        self.config = config
        self._groups: dict[str, list[Episode]] = {}  # group_id -> episodes, in arrival order (dict keeps it)
        self._pending: dict[str, list[Episode]] = {}  # incomplete groups held back by dynamic sampling
        self._rng = random.Random(config.seed)
        self._counters = {
            "added": 0,
            "sampled": 0,
            "evicted_stale": 0,
            "evicted_capacity": 0,
            "dropped_zero_variance": 0,
        }
        self._last_age = (0.0, 0.0)  # mean and max policy age of the last sampled batch

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def add(self, episodes: Episode | list[Episode]) -> None:
        """Store episodes under their ``group_id`` (whole groups are the unit of sampling)."""
        episodes = [episodes] if isinstance(episodes, Episode) else list(episodes)
        for ep in episodes:
            if not isinstance(ep, Episode):
                raise TypeError(f"ReplayBuffer.add takes Episode objects, got {type(ep).__name__}")
            if not ep.group_id:
                raise ValueError(f"episode {ep.episode_id} has no group_id; the buffer stores whole groups")
            self._counters["added"] += 1
            if self.config.dynamic_sampling:
                self._add_filtered(ep)
            else:
                self._groups.setdefault(ep.group_id, []).append(ep)
        self._enforce_capacity()

    def _add_filtered(self, ep: Episode) -> None:
        group = self._pending.setdefault(ep.group_id, [])
        group.append(ep)
        if len(group) < self.config.group_size:
            return
        del self._pending[ep.group_id]
        if len({g.reward for g in group}) == 1:
            self._counters["dropped_zero_variance"] += len(group)
        else:
            self._groups.setdefault(ep.group_id, []).extend(group)

    def _enforce_capacity(self) -> None:
        if self.config.max_size is None:
            return
        while len(self) > self.config.max_size:
            oldest = next(iter(self._groups))
            self._counters["evicted_capacity"] += len(self._groups.pop(oldest))

    def evict(self, curr_policy_version: int) -> int:
        """Drop episodes older than ``max_policy_age`` versions; returns how many were dropped."""
        dropped = 0
        for pool in (self._groups, self._pending):
            for gid in list(pool):
                kept = [
                    e
                    for e in pool[gid]
                    if curr_policy_version - e.policy_version <= self.config.max_policy_age
                ]
                dropped += len(pool[gid]) - len(kept)
                if kept:
                    pool[gid] = kept
                else:
                    del pool[gid]
        self._counters["evicted_stale"] += dropped
        return dropped

    def sample(self, curr_policy_version: int, batch_size: int | None = None) -> list[list[Episode]] | None:
        """``dp_size`` shards (lists of episodes) of ``batch_size`` episodes in all, or None if too few."""
        batch_size = self.config.batch_size if batch_size is None else batch_size
        if batch_size < 1 or batch_size % self.config.dp_size:
            raise ValueError(
                f"batch_size must be a positive multiple of dp_size={self.config.dp_size}, got {batch_size}"
            )
        self.evict(curr_policy_version)
        if len(self) < batch_size:
            return None
        order = list(self._groups)
        self._rng.shuffle(order)
        chosen, total = [], 0
        for gid in order:  # first-fit in random order: exact batch sizes with whole groups
            size = len(self._groups[gid])
            if total + size <= batch_size:
                chosen.append(gid)
                total += size
                if total == batch_size:
                    break
        if total != batch_size:
            return None  # the stored group sizes cannot add up to batch_size yet
        batch = [ep for gid in chosen for ep in self._groups.pop(gid)]
        self._counters["sampled"] += len(batch)
        ages = [curr_policy_version - ep.policy_version for ep in batch]
        self._last_age = (sum(ages) / len(ages), float(max(ages)))
        shard = batch_size // self.config.dp_size
        return [batch[r * shard : (r + 1) * shard] for r in range(self.config.dp_size)]

    def metrics(self) -> dict[str, float]:
        """Current size and cumulative counters, as ``buffer/...`` metrics."""
        out = {f"buffer/{k}": float(v) for k, v in self._counters.items()}
        out["buffer/size"] = float(len(self))
        out["buffer/groups"] = float(len(self._groups))
        out["buffer/pending"] = float(sum(len(g) for g in self._pending.values()))
        out["buffer/sampled_policy_age_mean"], out["buffer/sampled_policy_age_max"] = self._last_age
        return out

    def clear(self) -> None:
        self._groups.clear()
        self._pending.clear()

    def state_dict(self) -> dict:
        """Plain Python state (episodes as dicts, counters, sampler RNG); picklable, ``torch.save``-able."""
        return {
            "groups": {g: [dataclasses.asdict(e) for e in eps] for g, eps in self._groups.items()},
            "pending": {g: [dataclasses.asdict(e) for e in eps] for g, eps in self._pending.items()},
            "counters": dict(self._counters),
            "rng": self._rng.getstate(),
            "last_age": self._last_age,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"groups", "pending", "counters", "rng"} - set(state)
        if missing:
            raise KeyError(f"replay buffer state is missing {sorted(missing)}; was it made by state_dict()?")
        self._groups = {g: [Episode(**e) for e in eps] for g, eps in state["groups"].items()}
        self._pending = {g: [Episode(**e) for e in eps] for g, eps in state["pending"].items()}
        self._counters = dict(state["counters"])
        rng = state["rng"]
        self._rng.setstate((rng[0], tuple(rng[1]), rng[2]))  # tuple() survives a list round trip (json/yaml)
        self._last_age = tuple(state.get("last_age", (0.0, 0.0)))
