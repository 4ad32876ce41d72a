"""Datasets for forge: prompt sources, tasks with reward scorers, chat templates, SFT masking and packing.

    from forge.data import DatasetConfig, build_dataset, PromptSampler, score_response
    ds = build_dataset(DatasetConfig(source="arithmetic", split="rl"))       # PromptDataset of Sample
    sampler = PromptSampler(len(ds), seed=0)                                  # resumable order
    sample = ds[sampler.next_index()]                                         # Sample(prompt, target, metadata)
    reward = score_response(response_text, sample)                            # 1.0 = correct

Sources: arithmetic (the CPU demo's a+b task), jsonl, Hugging Face ``datasets``, GSM8K (``#### N``),
reasoning-gym tasks. SFT: :class:`SFTBatcher` → ``forge.types.TextTrainBatch`` (prompt-masked, optionally packed).
"""

from forge.data.answers import answers_match, extract_final_answer, parse_gsm8k_answer
from forge.data.arithmetic import arithmetic_dataset, arithmetic_pairs, arithmetic_sample
from forge.data.chat import render_prompt, to_messages
from forge.data.config import DatasetConfig, build_dataset
from forge.data.reasoning_gym import reasoning_gym_dataset
from forge.data.sample import PromptDataset, Sample, register_scorer, score_response
from forge.data.sampler import PromptSampler
from forge.data.sft import SFTBatcher, SFTExample, collate_sft, eval_batches, pack_sft, tokenize_sft
from forge.data.sources import HubUnreachableError, load_gsm8k, load_hf, load_jsonl, rows_to_samples

__all__ = [
    "DatasetConfig",
    "HubUnreachableError",
    "PromptDataset",
    "PromptSampler",
    "SFTBatcher",
    "SFTExample",
    "Sample",
    "answers_match",
    "arithmetic_dataset",
    "arithmetic_pairs",
    "arithmetic_sample",
    "build_dataset",
    "collate_sft",
    "eval_batches",
    "extract_final_answer",
    "load_gsm8k",
    "load_hf",
    "load_jsonl",
    "pack_sft",
    "parse_gsm8k_answer",
    "reasoning_gym_dataset",
    "register_scorer",
    "render_prompt",
    "rows_to_samples",
    "score_response",
    "to_messages",
    "tokenize_sft",
]
