"""Generation engines behind ``forge.actors.generator.Generator``: vLLM's ``AsyncLLM`` and plain transformers.

Both take a ``GeneratorConfig`` and expose the same async surface: ``start()``, ``generate(prompt,
sampling_params=None) -> list[Completion]``, ``update_weights(version)`` (load that version from ``forge.store``
without draining), ``version``, ``shutdown()``. ``build_engine(config)`` picks one by ``config.backend``.
"""

from __future__ import annotations

from forge.engines.generation.config import GeneratorConfig, encode_prompt, merge_sampling


def build_engine(config: GeneratorConfig):
    """The engine for ``config.backend`` (imports vLLM only for the vllm backend)."""
    if config.backend == "vllm":
        from forge.engines.generation.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    from forge.engines.generation.hf_engine import HFEngine

    return HFEngine(config)


__all__ = ["GeneratorConfig", "build_engine", "encode_prompt", "merge_sampling"]
