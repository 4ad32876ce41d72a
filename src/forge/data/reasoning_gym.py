"""reasoning-gym procedural tasks (``gsm_symbolic``, ``basic_arithmetic``, ``chain_sum``, ``countdown``, ...) as
prompt datasets whose scorer is the task's own ``score_answer`` (usable directly as a reward).

Answers are expected inside ``<answer>...</answer>`` (reasoning-gym's convention, stated in its default system
prompt); a response without the tag is scored on its whole stripped text, so a model that answers bare still
gets credit when exact. Problems are generated offline from ``seed``; ``split="test"`` uses a different seed
stream so a held-out set does not repeat the training problems' seed.
"""

from __future__ import annotations

import functools
from typing import Any

from forge.data.sample import PromptDataset, Sample, register_scorer

__all__ = ["reasoning_gym_dataset"]

_SPLIT_SEED_OFFSET = {"train": 0, "test": 1_000_003, "eval": 1_000_003}


def _system_prompt(name_or_text: str) -> str:
    """A reasoning-gym prompt by name ("default", "simple", "direct", "DeepSeekZero", ...) or literal text."""
    from reasoning_gym.utils import SYSTEM_PROMPTS

    return SYSTEM_PROMPTS.get(name_or_text, name_or_text)


def reasoning_gym_dataset(
    task: str, size: int = 1000, seed: int = 0, split: str = "train", task_args: dict[str, Any] | None = None,
    system_prompt: str | None = "default",
) -> PromptDataset:
    """``size`` problems of reasoning-gym ``task``. Prompts are chat messages (system + user) when
    ``system_prompt`` is set (a reasoning-gym prompt name such as "default", or literal text), else the bare
    question text."""
    import reasoning_gym

    if split not in _SPLIT_SEED_OFFSET:
        raise ValueError(f"reasoning-gym split must be one of {list(_SPLIT_SEED_OFFSET)}, got {split!r}")
    args = dict(task_args or {})
    try:
        ds = reasoning_gym.create_dataset(task, size=size, seed=seed + _SPLIT_SEED_OFFSET[split], **args)
    except ValueError as e:
        import difflib

        from reasoning_gym.factory import DATASETS

        near = difflib.get_close_matches(task, list(DATASETS), n=3)
        raise ValueError(f"reasoning-gym task {task!r} failed: {e}; close task names: {near}") from e
    sys_text = _system_prompt(system_prompt) if system_prompt else None
    samples = []
    for i in range(size):
        entry = ds[i]
        prompt: Any = entry["question"]
        if sys_text:
            prompt = [{"role": "system", "content": sys_text}, {"role": "user", "content": entry["question"]}]
        meta = {"task": "reasoning_gym", "rg_task": task, "rg_args": args, "entry": _plain(entry), "index": i}
        samples.append(Sample(prompt, str(entry["answer"]), meta))
    return PromptDataset(samples, name=f"rg/{task}/{split}")


def _plain(entry: dict) -> dict:
    """The entry without non-picklable leftovers (entries are plain dicts of str/int/list in 0.1.25)."""
    return {k: entry[k] for k in ("question", "answer", "metadata") if k in entry}


@functools.lru_cache(maxsize=64)
def _scorer(task: str, args_key: tuple):
    import reasoning_gym

    return reasoning_gym.create_dataset(task, size=1, seed=0, **dict(args_key)).score_answer


@register_scorer("reasoning_gym")
def score_reasoning_gym(response: str, sample: Sample) -> float:
    """reasoning-gym's ``score_answer(answer, entry)`` on the ``<answer>`` content (or the whole response)."""
    from reasoning_gym.utils import extract_answer

    answer = extract_answer(response)
    if answer is None:
        answer = response.strip()
    meta = sample.metadata
    args_key = tuple(sorted((k, _hashable(v)) for k, v in meta.get("rg_args", {}).items()))
    return float(_scorer(meta["rg_task"], args_key)(answer, meta["entry"]))


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v
