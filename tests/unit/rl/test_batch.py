"""forge.rl.batch.collate_episodes: positions, masks and padding by hand."""

import math

import pytest
import torch

from forge.rl.batch import collate_episodes
from forge.types import Episode

PAD = 0


def test_collate_hand_built_batch():
    a = Episode(
        prompt_ids=[1, 2, 3],
        response_ids=[4, 5],
        reward=1.0,
        generator_logprobs=[-0.1, -0.2],
        policy_version=3,
        group_id="g",
        advantage=0.5,
        ref_logprobs=[-0.3, -0.4],
    )
    # multi-turn: token 9 is tool output (mask 0, its log-prob is -inf and must read 0)
    b = Episode(
        prompt_ids=[7],
        response_ids=[8, 9, 10],
        reward=0.0,
        generator_logprobs=[-1.0, -math.inf, -3.0],
        policy_version=4,
        group_id="g",
        advantage=-0.5,
        response_mask=[1, 0, 1],
        ref_logprobs=[-1, 0, -2],
    )
    batch = collate_episodes([a, b], pad_id=PAD)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4], [7, 8, 9, PAD]]
    assert batch.target_ids.tolist() == [[2, 3, 4, 5], [8, 9, 10, PAD]]
    assert batch.loss_mask.tolist() == [[0, 0, 1, 1], [1, 0, 1, 0]]
    torch.testing.assert_close(
        batch.generator_logprobs, torch.tensor([[0, 0, -0.1, -0.2], [-1.0, 0, -3.0, 0]])
    )
    torch.testing.assert_close(batch.ref_logprobs, torch.tensor([[0, 0, -0.3, -0.4], [-1.0, 0, -2.0, 0]]))
    assert batch.advantages.tolist() == [0.5, -0.5] and batch.policy_version.tolist() == [3, 4]
    assert batch.num_tokens == 4
    assert collate_episodes([a, b], pad_id=PAD, pad_to_multiple_of=8).input_ids.shape == (2, 8)


def test_collate_errors():
    ok = dict(
        prompt_ids=[1],
        response_ids=[2],
        reward=0.0,
        generator_logprobs=[-1.0],
        policy_version=0,
        group_id="g",
        advantage=0.0,
    )
    with pytest.raises(ValueError, match="has no advantage"):
        collate_episodes([Episode(**{**ok, "advantage": None})], PAD)
    with pytest.raises(ValueError, match="one per response token"):
        collate_episodes([Episode(**{**ok, "generator_logprobs": []})], PAD)
    with pytest.raises(ValueError, match="no prompt_ids"):
        collate_episodes([Episode(**{**ok, "prompt_ids": []})], PAD)
    with pytest.raises(ValueError, match="every episode of a batch has ref_logprobs or none"):
        collate_episodes([Episode(**ok), Episode(**{**ok, "ref_logprobs": [-1.0]})], PAD)


def test_collated_logprobs_equal_per_episode_logprobs_of_a_real_model(tmp_path):
    """The batch convention end to end: a tiny HF model scores the padded batch as each unpadded episode."""
    from transformers import AutoModelForCausalLM

    from forge.models.tiny import TinyModelSpec, build_tiny_model
    from forge.rl.loss.ops import compute_logprobs

    path = build_tiny_model(
        tmp_path / "m",
        TinyModelSpec(
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
    )
    model = AutoModelForCausalLM.from_pretrained(path).double().eval()
    g = torch.Generator().manual_seed(0)
    episodes = []
    for p_len, r_len in ((3, 5), (6, 2), (1, 4)):
        ids = torch.randint(0, 250, (p_len + r_len,), generator=g).tolist()
        episodes.append(
            Episode(
                prompt_ids=ids[:p_len],
                response_ids=ids[p_len:],
                reward=0.0,
                generator_logprobs=[0.0] * r_len,
                policy_version=0,
                group_id="g",
                advantage=1.0,
            )
        )
    batch = collate_episodes(episodes, pad_id=PAD)
    with torch.no_grad():
        got = compute_logprobs(model(batch.input_ids).logits, batch.target_ids)
        for i, ep in enumerate(episodes):
            seq = torch.tensor([ep.prompt_ids + ep.response_ids])
            logp = torch.log_softmax(model(seq).logits[0], -1)
            want = [logp[len(ep.prompt_ids) - 1 + j, tok].item() for j, tok in enumerate(ep.response_ids)]
            assert got[i][batch.loss_mask[i] > 0].tolist() == pytest.approx(want, abs=1e-10)
