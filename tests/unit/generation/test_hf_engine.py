"""The transformers generation engine, in one process: log-probs against an independent forward pass, sampling
rules, prompt forms, and in-flight weight updates from the store with correct version labels."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

import forge.store as ws
from forge.engines.generation import GeneratorConfig, build_engine, encode_prompt
from forge.engines.generation.hf_engine import processed_logprobs
from forge.models.tiny import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), TinyModelSpec(hidden_size=64, intermediate_size=128)))


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_STORE_DIR", str(tmp_path / "store"))
    yield ws.get_store()


async def _engine(model_dir, **sampling):
    eng = build_engine(GeneratorConfig.build({"model": model_dir, "dtype": "float32", "seed": 0}, sampling,
                                             backend="hf"))
    await eng.start()
    return eng


def _reference_logprobs(model, prompt_ids, token_ids, temperature=1.0) -> list[float]:
    """Independent reference: one full forward pass over prompt + response, log-softmax, pick each token."""
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    if temperature > 0:
        logits = logits / temperature
    lp = torch.log_softmax(logits, dim=-1)
    p = len(prompt_ids)
    return [float(lp[p - 1 + i, t]) for i, t in enumerate(token_ids)]


async def test_sampled_logprobs_match_a_full_forward_pass(model_dir):
    eng = await _engine(model_dir, n=3, max_tokens=12, temperature=0.7, ignore_eos=True)
    comps = await eng.generate("12+7=")
    assert len(comps) == 3
    for c in comps:
        assert len(c.token_ids) == 12 and c.stop_reason == "length"
        ref = _reference_logprobs(eng.model, c.prompt_ids, c.token_ids, temperature=0.7)
        assert max(abs(a - b) for a, b in zip(c.logprobs, ref)) < 1e-4
        assert c.generator_version == c.generator_version_last == 0
        assert c.metadata["weight_versions"] == [(0, 0, 12)]


async def test_greedy_is_argmax_and_seed_reproduces(model_dir):
    eng = await _engine(model_dir)
    g = (await eng.generate([5, 6, 7], {"temperature": 0.0, "max_tokens": 8, "ignore_eos": True}))[0]
    ids = [5, 6, 7]
    for t in g.token_ids:  # independent greedy decode without a KV cache
        with torch.no_grad():
            nxt = int(eng.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        assert t == nxt
        ids.append(nxt)
    a = await eng.generate("x", {"seed": 123, "max_tokens": 6, "ignore_eos": True})
    b = await eng.generate("x", {"seed": 123, "max_tokens": 6, "ignore_eos": True})
    assert a[0].token_ids == b[0].token_ids


async def test_prompt_forms(model_dir):
    eng = await _engine(model_dir, max_tokens=2)
    tok = eng.tokenizer
    assert encode_prompt(tok, "ab") == [97, 98]  # byte tokenizer: one id per byte
    assert encode_prompt(tok, [1, 2, 3]) == [1, 2, 3]
    chat = encode_prompt(tok, [{"role": "user", "content": "hi"}])
    assert tok.decode(chat) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    c = (await eng.generate([{"role": "user", "content": "hi"}]))[0]
    assert c.prompt_ids == chat
    with pytest.raises(TypeError, match="prompt must be a non-empty str"):
        await eng.generate(42)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        await eng.generate([1, 99999])
    with pytest.raises(ValueError, match="needs 'role' and 'content'"):
        await eng.generate([{"content": "x"}])


def test_processed_logprobs_top_k_top_p_against_hand_computation():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    # top_k=2 at temperature 0.5: softmax over {4, 2} only
    lp = processed_logprobs(logits, 0.5, 2, 1.0)[0]
    z = math.log(math.exp(4) + math.exp(2))
    assert torch.allclose(lp[:2], torch.tensor([4 - z, 2 - z]), atol=1e-6) and torch.isinf(lp[2:]).all()
    # top_p=0.7 at temperature 1: probs ~ [0.644, 0.237, 0.087, 0.032]; the top token alone is < 0.7, the first two
    # reach it, so exactly two tokens stay
    lp = processed_logprobs(logits, 1.0, 0, 0.7)[0]
    z = math.log(math.exp(2) + math.exp(1))
    assert torch.allclose(lp[:2], torch.tensor([2 - z, 1 - z]), atol=1e-6) and torch.isinf(lp[2:]).all()


def test_config_errors():
    with pytest.raises(ValueError, match="valid backends"):
        GeneratorConfig.build({"model": "m"}, backend="tgi")
    with pytest.raises(ValueError, match="needs 'model'"):
        GeneratorConfig.build({})
    with pytest.raises(ValueError, match="does not implement sampling params"):
        GeneratorConfig.build({"model": "m"}, {"presence_penalty": 1.0}, backend="hf")
    with pytest.raises(TypeError, match="must be a dict or a vLLM"):
        GeneratorConfig.build({"model": "m"}, sampling_params=3)


async def test_update_mid_request_labels_versions_and_switches_weights(model_dir, store):
    eng = await _engine(model_dir, max_tokens=40, temperature=1.0, ignore_eos=True)
    old = {k: v.clone() for k, v in eng.model.state_dict().items()}
    new = {k: v + 0.05 * torch.randn_like(v) for k, v in old.items()}
    await ws.put_state_dict(new, ws.policy_prefix(1))

    async def push_later():
        await asyncio.sleep(0)  # let the request sample a few tokens first
        for _ in range(5):
            await asyncio.sleep(0)
        await ws.commit(ws.policy_prefix(1))
        return await eng.update_weights(1)

    comps, timings = await asyncio.gather(eng.generate([10, 11, 12]), push_later())
    c = comps[0]
    assert "reload_s" in timings and eng.version == 1
    (v0, s0, e0), (v1, s1, e1) = c.metadata["weight_versions"]
    assert (v0, v1) == (0, 1) and s0 == 0 and e0 == s1 and e1 == 40 and 0 < s1 < 40
    assert c.generator_version == 0 and c.generator_version_last == 1
    for k, v in new.items():
        assert torch.equal(eng.model.state_dict()[k], v), k
    # A request after the update reports version 1 only.
    c2 = (await eng.generate("z"))[0]
    assert c2.generator_version == c2.generator_version_last == 1
    assert await eng.update_weights(1) == {}  # already serving it
