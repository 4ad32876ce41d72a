"""``SandboxedPythonCoder``: the seeds' CPU-only code-execution service, a thin shell over ``forge.envs.sandbox``.

```python
coder = await SandboxedPythonCoder.options(procs=1, with_gpus=False, num_replicas=16).as_service()
stdout, stderr = await coder.execute.route(code)               # an ExecutionResult unpacks as the seeds do
result = await coder.execute.route(code, stdin="3\\n", timeout=2.0)
result.exit_code, result.timed_out, result.truncated
await SandboxedPythonCoder.shutdown(coder)
```

Untrusted code gets an ``ExecutionResult``, never an exception; the threat model is in ``forge/envs/sandbox.py``
and docs/SANDBOX.md. ``setup`` fails (and so does ``as_service``) when bubblewrap cannot isolate on the host,
unless the config opts into ``allow_weak_isolation``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from monarch.actor import concurrent_endpoint, endpoint

from forge.config import from_dict
from forge.controller.actor import ForgeActor
from forge.envs.sandbox import ExecutionResult, Sandbox, SandboxConfig


class SandboxedPythonCoder(ForgeActor):
    """Executes untrusted Python in bubblewrap; ``config.max_concurrency`` runs at once per replica."""

    def __init__(self, config: SandboxConfig | dict[str, Any] | None = None, **fields: Any):
        """``config`` (a SandboxConfig or its dict) and/or SandboxConfig fields (timeout_s=, memory_bytes=, ...)."""
        if isinstance(config, SandboxConfig):
            self.config = dataclasses.replace(config, **fields)
        else:
            self.config = from_dict(SandboxConfig, {**(config or {}), **fields})
        self.sandbox: Sandbox | None = None

    @endpoint
    async def setup(self) -> None:
        self.sandbox = Sandbox(self.config)  # probes bubblewrap; raises SandboxUnavailableError if it cannot isolate

    @concurrent_endpoint
    async def execute(self, code: str, stdin: str | bytes | None = None,
                      timeout: float | None = None) -> ExecutionResult:
        """Run ``code`` (Python source) in a fresh sandbox; ``timeout`` in seconds overrides the config's."""
        return await self.sandbox.execute(code, stdin=stdin, timeout=timeout)


SandboxedCoder = SandboxedPythonCoder  # the name one seed page (concepts.md) uses
