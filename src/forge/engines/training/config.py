"""Configuration of the training engine (and of the ``TitanTrainer`` / ``ReferenceModel`` actors on top of it).

The section names follow the seeds' ``TitanTrainer`` properties (``model``, ``optimizer``, ``lr_scheduler``,
``training``, ``checkpoint``, ``activation_checkpoint``, ``compile``) plus ``loss``, so a YAML tree written for
the seeds' trainer maps onto :class:`TrainerConfig` section by section. Every dataclass is frozen; derived values
(the resolved parameter dtype, the device) are computed by the engine, never stored back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelConfig:
    """Which Hugging Face causal LM to train."""

    path: str = ""  # local HF directory (config.json + safetensors + tokenizer files)
    random_init: bool = False  # build from config.json with random weights (benchmarks); ignores the weights
    attn_implementation: str = "sdpa"  # HF attention kernel; sdpa runs forward and backward on CPU and GPU
    export_dtype: str = "auto"  # dtype of exported / pushed weights; "auto" = the dtype in config.json


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW (the only optimizer; Loshchilov & Hutter 2019)."""

    name: str = "AdamW"  # kept for seed-config compatibility; only "AdamW" is accepted
    lr: float = 1e-5  # peak learning rate (reached at the end of warmup)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moment decay rates
    eps: float = 1e-8  # Adam denominator epsilon
    weight_decay: float = 0.0  # decoupled weight decay
    fused: bool | None = None  # fused CUDA kernel; None = fused on CUDA, foreach on CPU


@dataclass(frozen=True)
class LRSchedulerConfig:
    """Linear warmup then cosine decay to ``min_lr_factor * lr`` (constant after ``decay_steps``)."""

    warmup_steps: int = 0  # optimizer steps of linear warmup from lr / (warmup_steps + 1) to lr
    decay_steps: int | None = None  # cosine-decay steps after warmup; None = constant lr after warmup
    min_lr_factor: float = 0.0  # floor of the cosine, as a fraction of the peak lr


@dataclass(frozen=True)
class TrainingConfig:
    """The step itself: batching, precision, clipping, seeding."""

    micro_batch_size: int = 8  # rows per forward/backward on each rank (gradient accumulation above that)
    max_norm: float | None = 1.0  # gradient clipping by global L2 norm; None or 0 = no clipping
    param_dtype: str = "auto"  # FSDP2 compute dtype of params; "auto" = bfloat16 on CUDA, float32 on CPU
    reduce_dtype: str = "float32"  # dtype of the gradient reduce-scatter
    temperature: float = 1.0  # logits are divided by this before log-probs (must match the generator's)
    seed: int = 0  # seed of torch's RNGs at setup (random init, dropout)
    device: str = "auto"  # "auto" = cuda:LOCAL_RANK when CUDA is available, else cpu


@dataclass(frozen=True)
class CheckpointConfig:
    """Where ``save(step)`` writes its ``torch.distributed.checkpoint`` folders."""

    folder: str = "./checkpoints"  # checkpoints go to <folder>/step_<n>
    keep_latest: int | None = None  # delete older step folders beyond this many; None = keep all


@dataclass(frozen=True)
class ActivationCheckpointConfig:
    """Activation checkpointing (recompute each decoder layer's activations in backward)."""

    mode: str = "none"  # "none" or "full" (every decoder layer)


@dataclass(frozen=True)
class CompileConfig:
    """torch.compile of each decoder layer (in place: parameter names are unchanged)."""

    enable: bool = False  # compile decoder layers with torch.compile


@dataclass(frozen=True)
class LossConfig:
    """The training loss. "cross_entropy" for SFT batches; any forge.rl.loss registry name for RL batches."""

    name: str = "cross_entropy"  # "cross_entropy" (token-mean SFT) or a forge.rl.loss name ("grpo", "dapo", ...)
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to forge.rl.loss.build_loss(name, **kwargs)


@dataclass(frozen=True)
class TrainerConfig:
    """The whole trainer: one section per concern, as in the seeds' TitanTrainer."""

    model: ModelConfig = field(default_factory=ModelConfig)  # which model
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # AdamW hyper-parameters
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)  # warmup + cosine
    training: TrainingConfig = field(default_factory=TrainingConfig)  # batching, precision, clipping
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # DCP folder
    activation_checkpoint: ActivationCheckpointConfig = field(default_factory=ActivationCheckpointConfig)  # AC
    compile: CompileConfig = field(default_factory=CompileConfig)  # torch.compile
    loss: LossConfig = field(default_factory=LossConfig)  # loss name + kwargs

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, tree: dict[str, Any] | None = None, **sections: Any) -> TrainerConfig:
        """Build from a nested dict (YAML tree) and/or keyword sections; unknown keys raise with suggestions."""
        return _build(cls, tree, sections)


def _build(cls: type, tree: dict[str, Any], sections: dict[str, Any]) -> Any:
    """``forge.config.from_dict`` over ``tree`` with ``sections`` replacing whole top-level keys (dataclass
    sections are accepted too); unknown keys and wrong types raise ``forge.config.ConfigError``."""
    from forge.config import from_dict, to_dict

    merged = {**to_dict(dict(tree or {})), **{k: to_dict(v) for k, v in sections.items()}}
    return from_dict(cls, merged)


def _validate(cfg: TrainerConfig) -> None:
    """Reject values the engine cannot honour, naming the field and what would be right."""
    t = cfg.training
    if t.micro_batch_size < 1:
        raise ValueError(f"training.micro_batch_size must be >= 1, got {t.micro_batch_size}")
    for name in ("param_dtype", "reduce_dtype"):
        if getattr(t, name) not in _DTYPES:
            raise ValueError(f"training.{name}={getattr(t, name)!r}; use one of {_DTYPES}")
    if cfg.model.export_dtype not in _DTYPES:
        raise ValueError(f"model.export_dtype={cfg.model.export_dtype!r}; use one of {_DTYPES}")
    if t.temperature <= 0:
        raise ValueError(f"training.temperature must be > 0, got {t.temperature}")
    if cfg.optimizer.name.lower() != "adamw":
        raise ValueError(f"optimizer.name={cfg.optimizer.name!r}: only 'AdamW' is implemented")
    if cfg.optimizer.lr < 0:
        raise ValueError(f"optimizer.lr must be >= 0, got {cfg.optimizer.lr}")
    s = cfg.lr_scheduler
    if s.warmup_steps < 0 or (s.decay_steps is not None and s.decay_steps < 1):
        raise ValueError(f"lr_scheduler: warmup_steps must be >= 0 and decay_steps >= 1 or None, got {s}")
    if not 0.0 <= s.min_lr_factor <= 1.0:
        raise ValueError(f"lr_scheduler.min_lr_factor must be in [0, 1], got {s.min_lr_factor}")
    if cfg.activation_checkpoint.mode not in ("none", "full"):
        raise ValueError(f"activation_checkpoint.mode={cfg.activation_checkpoint.mode!r}; use 'none' or 'full'")
    if cfg.checkpoint.keep_latest is not None and cfg.checkpoint.keep_latest < 1:
        raise ValueError(f"checkpoint.keep_latest must be >= 1 or None, got {cfg.checkpoint.keep_latest}")


@dataclass(frozen=True)
class ReferenceConfig:
    """The frozen reference model (KL baseline): same loading and sharding as the trainer, no optimizer."""

    model: ModelConfig = field(default_factory=ModelConfig)  # which model (usually the trainer's initial one)
    param_dtype: str = "auto"  # compute dtype; "auto" = bfloat16 on CUDA, float32 on CPU
    temperature: float = 1.0  # logits are divided by this before log-probs (must match the generator's)
    max_tokens_per_forward: int = 16384  # memory budget: rows per forward = max(1, this // T)
    device: str = "auto"  # "auto" = cuda:LOCAL_RANK when CUDA is available, else cpu
    seed: int = 0  # seed for random_init models

    def __post_init__(self) -> None:
        if self.param_dtype not in _DTYPES:
            raise ValueError(f"param_dtype={self.param_dtype!r}; use one of {_DTYPES}")
        if self.temperature <= 0 or self.max_tokens_per_forward < 1:
            raise ValueError(
                f"temperature must be > 0 and max_tokens_per_forward >= 1, got {self.temperature}, "
                f"{self.max_tokens_per_forward}"
            )

    @classmethod
    def from_dict(cls, tree: dict[str, Any] | None = None, **fields: Any) -> ReferenceConfig:
        """Build from a nested dict and/or keyword fields; unknown keys raise with suggestions."""
        return _build(cls, tree, fields)
