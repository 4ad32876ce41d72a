"""The GRPO app's configuration: one frozen dataclass per section, mirroring the YAML tree 1:1.

    model: tiny                       # RunSettings-level model name or HF directory (see apps/common.py)
    run:       RunSettings            # name, seed, runs_dir, checkpoint cadence, cache
    grpo:      GRPOSettings           # group size, batch, steps, async/sync, staleness, dynamic sampling
    dataset:   forge.data.DatasetConfig (training prompts)
    eval:      EvalSettings           # held-out split, cadence, pass@k
    generator: GeneratorSection       # vLLM engine args, default sampling, placement
    trainer:   TrainerSection         # forge.engines.training.TrainerConfig + placement
    ref_model: RefSection | None      # frozen reference for a KL penalty (loss kwargs beta > 0)
    metrics:   forge.observability.MetricLoggerConfig

Derived values (the full batch size, the trainer's own config) are properties, never stored back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from forge.data import DatasetConfig
from forge.engines.training.config import LossConfig, TrainerConfig
from forge.envs.grpo import ToolEnvConfig
from forge.observability import MetricLoggerConfig


@dataclass(frozen=True)
class RunSettings:
    """Where the run writes and how it is made repeatable."""

    name: str = "grpo"  # run directory prefix: <runs_dir>/<name>-<time>/
    runs_dir: str = "runs"  # parent of every run directory (runs/latest points at the newest)
    seed: int = 0  # seeds the data order, the trainer and the generator's sampling
    checkpoint_every: int = 100  # save trainer + controller state every N steps (0 = only at the end / Ctrl-C)
    keep_checkpoints: int = 2  # newest trainer checkpoints kept on disk
    cache_dir: str = ""  # built models and SFT warm starts; "" = $FORGE_CACHE_DIR or ~/.cache/forge
    plot: bool = True  # write plot.png at the end of the run
    time_budget_s: float | None = None  # stop training once the run (warm start included) is this old; None = off


@dataclass(frozen=True)
class GRPOSettings:
    """The algorithm: Shao et al. 2024 (arXiv:2402.03300) with DAPO's dynamic sampling (arXiv:2503.14476)."""

    steps: int = 300  # optimizer steps of the run
    group_size: int = 8  # responses sampled per prompt (G); advantages are relative within a group
    prompts_per_step: int = 32  # groups per optimizer step; the batch has prompts_per_step * group_size rows
    mode: Literal["async", "sync"] = "async"  # async: rollouts and training overlap; sync: collect, then train
    max_policy_age: int = 1  # async: drop groups sampled by weights more than this many versions old
    num_rollout_loops: int = 4  # async: concurrent continuous_rollouts tasks feeding the buffer
    advantage: Literal["grpo", "dr_grpo", "rloo"] = "grpo"  # advantage estimator (forge.rl.advantages)
    dynamic_sampling: bool = True  # skip groups whose rewards are all equal (zero advantage, no gradient)
    max_tokens: int = 8  # longest response in tokens
    temperature: float = 1.0  # sampling temperature of training rollouts (the trainer divides logits by it too)

    @property
    def batch_size(self) -> int:
        """Rows of one optimizer step."""
        return self.prompts_per_step * self.group_size

    def __post_init__(self) -> None:
        for name in ("steps", "group_size", "prompts_per_step", "num_rollout_loops", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"grpo.{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"grpo.group_size must be >= 2 (a group of one has no relative advantage), "
                             f"got {self.group_size}")
        if self.max_policy_age < 0:
            raise ValueError(f"grpo.max_policy_age must be >= 0, got {self.max_policy_age}")


@dataclass(frozen=True)
class EvalSettings:
    """Periodic evaluation on a held-out split: greedy accuracy and pass@k."""

    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(source="arithmetic", split="test",
                                                                         shuffle=False))  # held-out prompts
    every_steps: int = 25  # evaluate every N optimizer steps (0 = only before and after training)
    max_samples: int = 1000  # held-out prompts per periodic evaluation (the first N of the split)
    final_max_samples: int | None = None  # prompts for the before/after evaluations; None = the whole split
    pass_k: int = 4  # pass@k: k samples at the training temperature; 0 or 1 = greedy accuracy only
    pass_k_samples: int = 200  # prompts used for pass@k (it costs k generations each)


@dataclass(frozen=True)
class GeneratorSection:
    """The vLLM generator service (forge.actors.generator.Generator) and its placement."""

    engine_args: dict[str, Any] = field(default_factory=dict)  # vLLM engine args; "model" comes from `model`
    sampling_params: dict[str, Any] = field(default_factory=dict)  # extra defaults (n/temperature/max_tokens
    #                                                                 come from the grpo section)
    backend: Literal["vllm", "hf"] = "vllm"  # generation backend
    weight_load: Literal["auto", "inplace", "reload"] = "auto"  # how vLLM loads a new version (see
    #                                                             forge.engines.generation.config.WEIGHT_LOADS)
    procs: int = 1  # processes per replica (tensor parallel on GPU)
    num_replicas: int = 1  # generator replicas behind the service
    with_gpus: bool = False  # give each process a GPU


@dataclass(frozen=True)
class TrainerSection(TrainerConfig):
    """forge.engines.training.TrainerConfig (model.path comes from `model`) plus the trainer's placement."""

    loss: LossConfig = field(default_factory=lambda: LossConfig(name="grpo"))  # policy loss name + kwargs
    procs: int = 1  # FSDP data-parallel processes
    with_gpus: bool = False  # give each process a GPU

    def engine_config(self, model_path: str, checkpoint_folder: str, keep: int, seed: int) -> TrainerConfig:
        """The TrainerConfig handed to TitanTrainer: this section with the run's model, folder and seed."""
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainerConfig)}
        base["model"] = dataclasses.replace(self.model, path=model_path)
        base["checkpoint"] = dataclasses.replace(self.checkpoint, folder=checkpoint_folder, keep_latest=keep)
        base["training"] = dataclasses.replace(self.training, seed=seed)
        return TrainerConfig(**base)


@dataclass(frozen=True)
class RefSection:
    """The frozen reference model (forge.actors.reference_model.ReferenceModel) for the KL penalty."""

    procs: int = 1  # processes
    with_gpus: bool = False  # give each process a GPU
    param_dtype: str = "auto"  # compute dtype; auto = bfloat16 on CUDA, float32 on CPU


@dataclass(frozen=True)
class GRPOConfig:
    """The whole GRPO run (see the module docstring for the tree)."""

    model: str = "tiny"  # tiny | tiny-qwen2 | smollm2-135m | an HF directory | a hub id
    run: RunSettings = field(default_factory=RunSettings)  # run directory, seed, checkpoints
    grpo: GRPOSettings = field(default_factory=GRPOSettings)  # the algorithm
    dataset: DatasetConfig = field(default_factory=DatasetConfig)  # training prompts
    eval: EvalSettings = field(default_factory=EvalSettings)  # held-out evaluation
    generator: GeneratorSection = field(default_factory=GeneratorSection)  # vLLM service
    trainer: TrainerSection = field(default_factory=TrainerSection)  # FSDP trainer
    ref_model: RefSection | None = None  # reference model; required when trainer.loss.kwargs.beta > 0
    env: ToolEnvConfig | None = None  # multi-turn tool episodes (forge.envs.grpo); None = single-turn
    metrics: MetricLoggerConfig = field(default_factory=MetricLoggerConfig)  # console / jsonl / tb / wandb

    def __post_init__(self) -> None:
        beta = float(self.trainer.loss.kwargs.get("beta", 0.0) or 0.0)
        if beta > 0 and self.ref_model is None:
            raise ValueError(f"trainer.loss.kwargs.beta={beta} needs a reference model: add a `ref_model:` section")
        if self.trainer.loss.name == "cross_entropy":
            raise ValueError("trainer.loss.name is 'cross_entropy' (SFT); GRPO needs a policy loss such as "
                             "'grpo', 'dapo', 'cispo', 'gspo', 'sapo' or 'dr_grpo'")
        if self.grpo.batch_size % self.trainer.procs:
            raise ValueError(f"the batch (grpo.prompts_per_step * grpo.group_size = {self.grpo.batch_size} rows) "
                             f"must be a multiple of trainer.procs={self.trainer.procs}")
        if abs(self.trainer.training.temperature - self.grpo.temperature) > 1e-9:
            raise ValueError(f"trainer.training.temperature={self.trainer.training.temperature} must equal "
                             f"grpo.temperature={self.grpo.temperature}: log-probs must match the sampler's")
