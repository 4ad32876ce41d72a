"""The vLLM engine on CUDA with in-place weight loading (issue 5): the store's page-locked files are copied straight
into the live parameters, and the engine then serves exactly the pushed weights.

The test process plays the trainer and puts CUDA tensors (the page-locked writer path of ``forge.store.pinned``).
Reference: a transformers forward pass in fp32 on the CPU over the same tokens with the pushed weights. Tolerance
(fp32 engine on the GPU vs fp32 on the CPU; the GPU kernels differ: 5e-4 to 1e-3 mean seen on an H100):
mean |Δ log-prob| <= 5e-3 per token, max <= 5e-2; against the previous version's weights the mean must exceed 0.1
(0.8 to 1.3 seen), so a load that did not land cannot pass.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

import pytest
import pytest_asyncio
import torch

import forge.store as ws
from forge.models.tiny import TinyModelSpec, build_tiny_model
from forge.store import pinned

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600), pytest.mark.asyncio(loop_scope="module")]

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

MEAN_TOL, MAX_TOL = 5e-3, 5e-2
MAX_MODEL_LEN = 512
FIXED = list(b"The quick brown fox jumps over the lazy dog. 0123456789")


def _hf_logprobs(model_dir, state_dict, ids):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    m.load_state_dict(state_dict)
    with torch.no_grad():
        lp = torch.log_softmax(m(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    return [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]


def _perturbed(sd, seed, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in sd.items()}


async def _push(state_dict, version, commit=True):
    """The trainer's push from GPU memory: CUDA tensors into the store."""
    await ws.put_state_dict({k: v.cuda() for k, v in state_dict.items()}, ws.policy_prefix(version))
    if commit:
        await ws.commit(ws.policy_prefix(version))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env():
    from transformers import AutoModelForCausalLM

    from forge.engines.generation import GeneratorConfig
    from forge.engines.generation.vllm_engine import VLLMEngine

    work = tempfile.mkdtemp(prefix="forge-gen-gpu-")
    spec = TinyModelSpec(hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=1024, seed=3)
    model_dir = str(build_tiny_model(os.path.join(work, "model"), spec))
    engine = VLLMEngine(GeneratorConfig(
        engine_args={"model": model_dir, "dtype": "float32", "max_model_len": MAX_MODEL_LEN, "seed": 0,
                     "gpu_memory_utilization": 0.3},
        sampling_params={"n": 4, "max_tokens": 16}))
    await engine.start()
    w0 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    try:
        yield {"engine": engine, "model_dir": model_dir, "w": {0: w0}}
    finally:
        await engine.shutdown()
        pinned.release_all()  # the store folder itself is the suite's per-module one (tests/conftest.py)
        shutil.rmtree(work, ignore_errors=True)


async def test_inplace_load_serves_each_pushed_version(env):
    engine, model_dir, w = env["engine"], env["model_dir"], env["w"]
    assert engine.weight_load == "inplace"
    nbytes = sum(t.numel() * t.element_size() for t in w[0].values())
    # Four versions: from the fourth on, the store recycles the first version's file, so the page-locked mappings
    # cached by inode (writer and engine) are reused with new contents.
    for v in range(1, 5):
        w[v] = _perturbed(w[v - 1], seed=v)
        await _push(w[v], v)
        timings = await engine.update_weights(v)
        assert timings["bytes"] == nbytes and engine.version == v
        out = await engine.generate(FIXED, {"n": 1, "max_tokens": 1, "prompt_logprobs": 0})
        got = out[0].metadata["prompt_logprobs"][1:]
        d_new = [abs(a - b) for a, b in zip(got, _hf_logprobs(model_dir, w[v], FIXED))]
        d_old = [abs(a - b) for a, b in zip(got, _hf_logprobs(model_dir, w[v - 1], FIXED))]
        mean_new, mean_old = sum(d_new) / len(d_new), sum(d_old) / len(d_old)
        print(f"v{v}: mean |Δ| vs pushed {mean_new:.2e} (max {max(d_new):.2e}), vs previous {mean_old:.2e}; "
              f"reload {timings['reload_s']:.4f} s")
        assert mean_new <= MEAN_TOL and max(d_new) <= MAX_TOL, (v, mean_new, max(d_new))
        assert mean_old > 0.1, (v, mean_old)
        assert out[0].generator_version == v
    assert pinned.cached_files() == ws.get_store().config.keep_versions + 1  # v4 reused v1's registered file


async def test_request_in_flight_across_an_inplace_update(env):
    engine, w = env["engine"], env["w"]
    w[5] = _perturbed(w[4], seed=5)
    await _push(w[5], 5, commit=False)  # in the store before the request starts
    long = {"n": 4, "max_tokens": MAX_MODEL_LEN - 8, "ignore_eos": True, "temperature": 1.0}
    task = asyncio.create_task(engine.generate([7, 8, 9], long))
    await asyncio.sleep(0.2)
    assert not task.done(), "the long request finished before the update; make it longer"
    await ws.commit(ws.policy_prefix(5))
    await engine.update_weights(5)
    comps = await task
    for c in comps:
        assert len(c.token_ids) == MAX_MODEL_LEN - 8 and c.stop_reason == "length"
        assert c.generator_version == 4 and c.generator_version_last == 5
