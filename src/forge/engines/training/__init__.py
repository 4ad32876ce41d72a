"""Plain-PyTorch training engines: FSDP2 trainer (``TrainingEngine``) and frozen reference (``ReferenceEngine``)."""

from forge.engines.training.config import (
    ActivationCheckpointConfig,
    CheckpointConfig,
    CompileConfig,
    LossConfig,
    LRSchedulerConfig,
    ModelConfig,
    OptimizerConfig,
    ReferenceConfig,
    TrainerConfig,
    TrainingConfig,
)
from forge.engines.training.fsdp import TrainingEngine, WarmupCosine
from forge.engines.training.reference import ReferenceEngine

__all__ = [
    "ActivationCheckpointConfig",
    "CheckpointConfig",
    "CompileConfig",
    "LRSchedulerConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ReferenceConfig",
    "ReferenceEngine",
    "TrainerConfig",
    "TrainingConfig",
    "TrainingEngine",
    "WarmupCosine",
]
