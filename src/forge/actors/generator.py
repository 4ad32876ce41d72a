"""``Generator``: the policy's generation actor, a thin Monarch shell over a generation engine (issue 5).

```python
policy = await Generator.options(num_replicas=2).as_service(
    engine_args={"model": path, "enforce_eager": True}, sampling_params={"n": 8, "max_tokens": 256})
completions = await policy.generate.route(prompt)           # list[forge.types.Completion], n of them
await policy.update_weights.fanout(version)                  # after trainer.push_weights(version)
```

Each endpoint is one line into ``forge.engines.generation`` (``VLLMEngine`` on vLLM's ``AsyncLLM``, or
``HFEngine`` with ``backend="hf"``). ``generate`` and ``update_weights`` are concurrent endpoints: many generate
calls are batched by the engine, and an update lands while they run (the engine pauses, reloads in place and
resumes; requests in flight complete and report the versions of their first and last tokens). The weight store is
found through ``$FORGE_STORE_DIR``, inherited from the controller (see ``forge.store``); on another host than the
trainer, pass ``weight_source=await forge.store.rdma.serve_store()`` (started on the trainer's host) and missing
versions are fetched over RDMA into this host's store first. The engine's processes are
stopped when the actor's mesh stops (``__cleanup__``), and reaped by a watchdog if the process is killed.
"""

from __future__ import annotations

from typing import Any

from monarch.actor import concurrent_endpoint, endpoint

from forge.controller.actor import ForgeActor
from forge.engines.generation import GeneratorConfig, build_engine
from forge.types import Completion


class Generator(ForgeActor):
    """Serves ``generate`` from a vLLM (or transformers) engine and loads new policy versions from the store."""

    def __init__(self, engine_args: Any = None, sampling_params: Any = None, *, backend: str = "vllm",
                 initial_version: int = 0, update_timeout_s: float = 120.0, weight_source: Any = None,
                 weight_load: str = "auto"):
        if engine_args is None:
            raise ValueError("Generator needs engine_args, e.g. {'model': '/path/to/hf_model'}")
        self.config = GeneratorConfig.build(engine_args, sampling_params, backend=backend,
                                            initial_version=initial_version, update_timeout_s=update_timeout_s,
                                            weight_source=weight_source, weight_load=weight_load)
        self.engine = None

    @endpoint
    async def setup(self) -> None:
        """Start the engine (vLLM: tens of seconds on CPU)."""
        self.engine = build_engine(self.config)
        await self.engine.start()

    @concurrent_endpoint
    async def generate(self, prompt: Any, *, sampling_params: Any = None) -> list[Completion]:
        """``n`` completions of ``prompt`` (text, token ids or chat messages)."""
        return await self.engine.generate(prompt, sampling_params)

    @concurrent_endpoint
    async def update_weights(self, version: int) -> dict[str, float]:
        """Load policy ``version`` from the store without draining; returns timings in seconds."""
        return await self.engine.update_weights(version)

    @concurrent_endpoint
    async def get_version(self) -> int:
        """The policy version being served."""
        return self.engine.version

    @concurrent_endpoint
    async def get_vllm_config(self) -> Any:
        """The engine's ``vllm.config.VllmConfig`` (None for the hf backend)."""
        return self.engine.vllm_config()

    async def __cleanup__(self, exc: Exception | None) -> None:
        """Monarch calls this when the actor's mesh stops: shut the engine's processes down."""
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await engine.shutdown()
