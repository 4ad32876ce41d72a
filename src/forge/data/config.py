"""``DatasetConfig``: which prompts a run uses, and ``build_dataset`` that loads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from forge.data.arithmetic import arithmetic_dataset
from forge.data.chat import render_prompt
from forge.data.reasoning_gym import reasoning_gym_dataset
from forge.data.sample import PromptDataset
from forge.data.sources import load_gsm8k, load_hf, load_jsonl

__all__ = ["DatasetConfig", "build_dataset"]

Source = Literal["arithmetic", "jsonl", "hf", "gsm8k", "reasoning_gym", "code_tasks", "calculator"]


@dataclass(frozen=True)
class DatasetConfig:
    """A prompt dataset. ``split`` picks the part: arithmetic sft/rl/test; reasoning-gym train/test; hf/gsm8k the
    ``datasets`` split name."""

    source: Source = "arithmetic"  # arithmetic | jsonl | hf | gsm8k | reasoning_gym
    path: str = ""  # jsonl file; hf: local file, save_to_disk dir or hub name; gsm8k: file or hub name
    split: str = "rl"  # which part of the source (see the class docstring)
    subset: str | None = None  # hf: dataset configuration name (e.g. "main")
    prompt_key: str = "prompt"  # jsonl/hf: field holding the prompt (rows with "messages" are read as chats)
    target_key: str = "answer"  # jsonl/hf: field holding the reference answer
    # jsonl/hf: score the final number, or the exact text. arithmetic: exact (the default whatever is set here,
    # unless "digits": exact with partial credit per digit, a shaped reward for RL; keep eval sets exact)
    scorer: Literal["numeric", "exact", "digits"] = "numeric"
    task: str = "gsm_symbolic"  # reasoning_gym: task name
    task_args: dict[str, Any] = field(default_factory=dict)  # reasoning_gym: task config (e.g. min_terms)
    size: int = 1000  # reasoning_gym: problems generated
    seed: int = 0  # arithmetic split / reasoning-gym generation seed (not the sampling order)
    max_samples: int | None = None  # keep only the first N samples (None = all)
    chat_template: bool = False  # render prompts through the tokenizer's chat template
    tokenizer: str | None = None  # HF tokenizer directory; needed when chat_template is true
    system_prompt: str | None = None  # system message for chat prompts (reasoning_gym: a prompt name or text)
    shuffle: bool = True  # sample prompts in a reshuffled order each epoch (False: dataset order)
    shuffle_seed: int = 0  # seed of the sampling order (PromptSampler); saved with the run for --resume

    def __post_init__(self) -> None:
        if self.source in ("jsonl", "hf") and not self.path:  # gsm8k defaults to the hub's openai/gsm8k
            raise ValueError(f"dataset source {self.source!r} needs a path")
        if self.chat_template and not self.tokenizer:
            raise ValueError("chat_template: true needs tokenizer: <HF tokenizer or model directory>")


def build_dataset(cfg: DatasetConfig, tokenizer: Any = None) -> PromptDataset:
    """Load the samples ``cfg`` describes; prompts are rendered with the chat template when asked.

    ``tokenizer`` (an HF tokenizer) overrides ``cfg.tokenizer`` (loaded with ``AutoTokenizer`` otherwise).
    """
    if cfg.source == "arithmetic":
        ds = arithmetic_dataset(cfg.split, cfg.seed, cfg.max_samples, "digits" if cfg.scorer == "digits" else "exact")
    elif cfg.source == "jsonl":
        ds = load_jsonl(cfg.path, cfg.prompt_key, cfg.target_key, cfg.scorer)
    elif cfg.source == "hf":
        ds = load_hf(cfg.path, cfg.split, cfg.prompt_key, cfg.target_key, cfg.subset, cfg.scorer)
    elif cfg.source == "gsm8k":
        ds = load_gsm8k(cfg.path or "openai/gsm8k", cfg.split)
    elif cfg.source in ("code_tasks", "calculator"):  # generated environment tasks (issue 8); task_args: kwargs
        from forge.envs.grpo import env_dataset

        ds = env_dataset(cfg.source, cfg.size, cfg.seed, cfg.split, **dict(cfg.task_args))
    else:
        ds = reasoning_gym_dataset(cfg.task, cfg.size, cfg.seed, cfg.split, dict(cfg.task_args),
                                   system_prompt=cfg.system_prompt or "default")
    if cfg.max_samples is not None and len(ds) > cfg.max_samples:
        ds = PromptDataset(ds.samples[: cfg.max_samples], ds.name)
    if cfg.chat_template:
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer)
        system = cfg.system_prompt if cfg.source != "reasoning_gym" else None  # RG prompts carry their own
        ds = ds.map_prompts(lambda p: render_prompt(tokenizer, p, system))
    return ds
