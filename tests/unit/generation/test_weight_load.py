"""How the vLLM engine picks its weight-update path (``GeneratorConfig.weight_load``), checked without a GPU.

The in-place path itself (CUDA) is tested on a real engine in ``tests/gpu/test_generator_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from forge.engines.generation import GeneratorConfig
from forge.engines.generation.vllm_engine import WORKER_EXTENSION, VLLMEngine, _static_inplace_blockers


def test_unknown_weight_load_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"weight_load='fast'.*\['auto', 'inplace', 'reload'\]"):
        GeneratorConfig(engine_args={"model": "/m"}, weight_load="fast")


def test_static_blockers_name_each_reason():
    assert _static_inplace_blockers({"model": "/m"}, cuda=True) == []
    assert _static_inplace_blockers({"model": "/m", "worker_extension_cls": WORKER_EXTENSION}, cuda=True) == []
    got = _static_inplace_blockers({"model": "/m", "quantization": "fp8", "kv_cache_dtype": "fp8",
                                    "worker_extension_cls": "my.Ext"}, cuda=False)
    assert len(got) == 4
    assert got[0].startswith("no CUDA device") and "quantization='fp8'" in got[1]
    assert "kv_cache_dtype='fp8'" in got[2] and "worker_extension_cls='my.Ext'" in got[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
async def test_inplace_on_cpu_fails_before_starting_an_engine(tmp_path):
    pytest.importorskip("vllm")
    engine = VLLMEngine(GeneratorConfig(engine_args={"model": str(tmp_path)}, weight_load="inplace"))
    with pytest.raises(ValueError, match=r"weight_load='inplace' is not possible here: no CUDA device.*'reload'"):
        await engine.start()
    assert engine.engine is None and engine.weight_load == "reload"


def test_a_version_that_does_not_fit_is_refused_before_loading():
    from forge.engines.generation.vllm_engine import check_fits

    served = {"model.embed_tokens.weight": (256, 64), "model.norm.weight": (64,), "lm_head.weight": (256, 64)}
    check_fits(served, dict(served), 3)
    check_fits(served, {"model.embed_tokens.weight": (256, 64), "model.norm.weight": (64,)}, 3)  # tied lm_head
    check_fits({}, {"anything": (1,)}, 3)  # nothing known about the served checkpoint: no check
    with pytest.raises(ValueError, match=r"version 4 does not fit.*1 tensors missing \['model.norm.weight'\]"):
        check_fits(served, {"model.embed_tokens.weight": (256, 64)}, 4)
    with pytest.raises(ValueError, match=r"1 with another shape \['model.norm.weight: pushed \(32,\), served \(64,\)'\]"):
        check_fits(served, {"model.embed_tokens.weight": (256, 64), "model.norm.weight": (32,)}, 5)
