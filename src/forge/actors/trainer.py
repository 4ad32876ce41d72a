"""``TitanTrainer``: the seeds' trainer actor, a thin Monarch shell over the FSDP2 ``TrainingEngine``.

Backed by ``forge.engines.training.TrainingEngine`` (plain PyTorch FSDP2 over Hugging Face models, CPU/gloo and
GPU/NCCL) until a TorchTitan engine runs on GPU; the name and endpoints are the seeds'.

```python
trainer = await TitanTrainer.options(procs=2).as_actor(model={"path": model_dir}, optimizer={"lr": 1e-5})
metrics = await trainer.train_step.call(batch)         # ValueMesh: the same metrics dict on every rank
await trainer.push_weights.call(version)               # every rank puts its own shards into forge.store
```

With ``procs=N`` each endpoint runs on all N ranks. **Send every rank the same, whole batch** (``.call``
broadcasts it): each rank trains on its own contiguous block of B/N rows, so B must be a multiple of N. Every
rank returns the same (all-reduced) metrics. Collective endpoints (all but ``get_config``/``get_status``) must be
called on all ranks (``.call``), never on one (``.call_one`` on a multi-process mesh would hang the others).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from monarch.actor import endpoint

from forge.controller.actor import ForgeActor
from forge.engines.training import TrainerConfig, TrainingEngine
from forge.types import ForwardBackwardResult, RLBatch, TextTrainBatch


class TitanTrainer(ForgeActor):
    """Trainer actor: FSDP2 + AdamW over an HF causal LM; exact gradient accumulation and resume."""

    def __init__(self, config: TrainerConfig | dict[str, Any] | None = None, **sections: Any):
        """``config`` (a TrainerConfig or its dict tree) and/or sections: model=, optimizer=, lr_scheduler=,
        training=, checkpoint=, activation_checkpoint=, compile=, loss= (dicts or dataclasses)."""
        if isinstance(config, TrainerConfig):
            config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        self.config = TrainerConfig.from_dict(config or {}, **sections)  # a section given replaces that section
        self.engine = TrainingEngine(self.config)

    @endpoint
    async def setup(self) -> None:
        self.engine.setup()

    @endpoint
    async def forward_backward(self, batch: TextTrainBatch | RLBatch) -> ForwardBackwardResult:
        return self.engine.forward_backward(batch)

    @endpoint
    async def optim_step(self) -> dict[str, float]:
        return self.engine.optim_step()

    @endpoint
    async def train_step(self, batch: TextTrainBatch | RLBatch) -> dict[str, float]:
        return self.engine.train_step(batch)

    @endpoint
    async def clear_gradients(self) -> None:
        self.engine.clear_gradients()

    @endpoint
    async def save(self, step: int | None = None) -> str:
        return self.engine.save(step)

    @endpoint
    async def load(self, step_or_path: int | str) -> dict[str, int]:
        return self.engine.load(step_or_path)

    @endpoint
    async def push_weights(self, version: int) -> dict[str, float]:
        return await self.engine.push_weights(version)

    @endpoint
    async def export(self, path: str) -> str:
        return self.engine.export(path)

    @endpoint
    async def get_config(self) -> TrainerConfig:
        return self.config

    @endpoint
    async def get_status(self) -> dict[str, Any]:
        return self.engine.get_status()

    @endpoint
    async def cleanup(self) -> None:
        self.engine.cleanup()

