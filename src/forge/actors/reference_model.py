"""``ReferenceModel``: the seeds' frozen reference actor, a thin Monarch shell over ``ReferenceEngine``.

```python
ref = await ReferenceModel.options(procs=1).as_actor(model={"path": model_dir})
ref_logprobs = await ref.forward.call_one(batch)       # [B, T] float32 log-probs of batch.target_ids
```

With ``procs=N`` send every rank the whole batch (``.call``); each computes its block of rows and every rank
returns the full ``[B, T]`` (take any one, e.g. ``(await ref.forward.call(batch)).item(procs=0)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from monarch.actor import endpoint

from forge.controller.actor import ForgeActor
from forge.engines.training import ReferenceConfig, ReferenceEngine
from forge.types import RLBatch, TextTrainBatch


class ReferenceModel(ForgeActor):
    """Frozen policy copy: per-token log-probs of given targets, without gradients."""

    def __init__(self, config: ReferenceConfig | dict[str, Any] | None = None, **fields: Any):
        """``config`` (a ReferenceConfig or its dict) and/or its fields: model=, param_dtype=, temperature=,
        max_tokens_per_forward=, device=, seed=."""
        if isinstance(config, ReferenceConfig):
            config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        self.config = ReferenceConfig.from_dict(config or {}, **fields)
        self.engine = ReferenceEngine(self.config)

    @endpoint
    async def setup(self) -> None:
        self.engine.setup()

    @endpoint
    async def forward(
        self, batch: RLBatch | TextTrainBatch | torch.Tensor, target_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, T] log-probs of the targets (batch record, or input_ids [B, T] + target_ids [B, T])."""
        return self.engine.logprobs(batch, target_ids)

    @endpoint
    async def get_status(self) -> dict[str, Any]:
        return self.engine.get_status()

    @endpoint
    async def cleanup(self) -> None:
        self.engine.cleanup()
