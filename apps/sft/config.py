"""The SFT app's configuration: one frozen dataclass per section, mirroring the YAML tree 1:1.

    model: tiny                  # tiny | tiny-qwen2 | smollm2-135m | an HF directory | a hub id
    run:       SFTRunSettings    # name, seed, runs_dir, checkpoints, where the HF export goes
    sft:       SFTSettings       # steps, batch, sequence length, packing, chat template
    dataset:   forge.data.DatasetConfig (training examples: prompt + target)
    eval:      SFTEvalSettings   # held-out loss; optional held-out accuracy through a generator; early stop
    generator: apps.grpo.config.GeneratorSection (only started when eval.accuracy_samples > 0)
    trainer:   SFTTrainerSection (forge TrainerConfig, loss cross_entropy, + placement)
    metrics:   forge.observability.MetricLoggerConfig
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.grpo.config import GeneratorSection, TrainerSection
from forge.data import DatasetConfig
from forge.engines.training.config import LossConfig
from forge.observability import MetricLoggerConfig


@dataclass(frozen=True)
class SFTRunSettings:
    """Where the run writes and how it is made repeatable."""

    name: str = "sft"  # run directory prefix: <runs_dir>/<name>-<time>/
    runs_dir: str = "runs"  # parent of every run directory (runs/latest points at the newest)
    seed: int = 0  # seeds the data order and the trainer
    checkpoint_every: int = 0  # DCP checkpoint every N steps (0 = none; the HF export is always written)
    keep_checkpoints: int = 2  # newest checkpoints kept
    export_dir: str = ""  # where the final HF model goes; "" = <run dir>/hf (loadable by the GRPO app)
    cache_dir: str = ""  # built models; "" = $FORGE_CACHE_DIR or ~/.cache/forge


@dataclass(frozen=True)
class SFTSettings:
    """The supervised loop (prompt-masked next-token cross-entropy)."""

    steps: int = 1000  # optimizer steps (fewer when eval.stop_at_accuracy is reached)
    batch_size: int = 64  # documents (or packed rows) per step
    seq_len: int = 512  # longest row in tokens (packed rows are exactly this long)
    pack: bool = False  # pack several documents per row (position ids restart per document)
    chat_template: bool = False  # render prompt + target through the tokenizer's chat template
    system_prompt: str | None = None  # system message for chat-templated examples


@dataclass(frozen=True)
class SFTEvalSettings:
    """Held-out evaluation: token loss always, greedy accuracy when a generator is configured by accuracy_samples."""

    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(source="arithmetic", split="test",
                                                                         shuffle=False))  # held-out examples
    every_steps: int = 100  # evaluate every N steps (0 = only at the end)
    loss_samples: int = 256  # held-out examples for the eval loss
    accuracy_samples: int = 0  # held-out prompts for greedy accuracy (0 = no generator, no accuracy)
    max_tokens: int = 16  # longest generated answer for the accuracy check
    stop_at_accuracy: float | None = None  # stop SFT at the first evaluation with accuracy >= this


@dataclass(frozen=True)
class SFTTrainerSection(TrainerSection):
    """TrainerConfig + placement, with the SFT loss."""

    loss: LossConfig = field(default_factory=LossConfig)  # cross_entropy (token mean over the target tokens)


@dataclass(frozen=True)
class SFTConfig:
    """The whole SFT run."""

    model: str = "tiny"  # tiny | tiny-qwen2 | smollm2-135m | an HF directory | a hub id
    run: SFTRunSettings = field(default_factory=SFTRunSettings)  # run directory, seed, export
    sft: SFTSettings = field(default_factory=SFTSettings)  # the loop
    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(source="arithmetic", split="sft"))  # data
    eval: SFTEvalSettings = field(default_factory=SFTEvalSettings)  # held-out loss / accuracy
    generator: GeneratorSection = field(default_factory=GeneratorSection)  # for the accuracy check only
    trainer: SFTTrainerSection = field(default_factory=SFTTrainerSection)  # FSDP trainer
    metrics: MetricLoggerConfig = field(default_factory=MetricLoggerConfig)  # console / jsonl / tb / wandb

    def __post_init__(self) -> None:
        if self.trainer.loss.name != "cross_entropy":
            raise ValueError(f"trainer.loss.name={self.trainer.loss.name!r}: SFT trains with 'cross_entropy'")
        if self.sft.batch_size % self.trainer.procs:
            raise ValueError(f"sft.batch_size={self.sft.batch_size} must be a multiple of "
                             f"trainer.procs={self.trainer.procs}")
