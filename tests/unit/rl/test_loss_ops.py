"""forge.rl.loss.ops against naive references (torch.log_softmax, hand-computed numbers)."""

import math

import pytest
import torch

from forge.rl.loss import ops


def _naive_logprobs(logits, target_ids, temperature=1.0):
    return (
        torch.log_softmax(logits.double() / temperature, dim=-1)
        .gather(-1, target_ids.unsqueeze(-1))
        .squeeze(-1)
    )


@pytest.mark.parametrize("chunk_elements", [1 << 24, 40, 7, 1])  # whole batch, whole rows, position chunks
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_compute_logprobs_matches_log_softmax_in_value_and_gradient(chunk_elements, temperature):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, dtype=torch.float64, requires_grad=True)
    target_ids = torch.randint(0, 11, (3, 5))
    got = ops.compute_logprobs(logits, target_ids, temperature, chunk_elements=chunk_elements)
    want = _naive_logprobs(logits, target_ids, temperature)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(3, 5, dtype=torch.float64)
    (g_got,) = torch.autograd.grad((got * upstream).sum(), logits)
    (g_want,) = torch.autograd.grad((want * upstream).sum(), logits)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)


def test_compute_logprobs_gradcheck():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    target_ids = torch.randint(0, 5, (2, 3))
    assert torch.autograd.gradcheck(
        lambda x: ops.compute_logprobs(x, target_ids, 0.8, chunk_elements=6), (logits,)
    )


def test_compute_logprobs_on_a_non_contiguous_view_and_entropy():
    torch.manual_seed(2)
    full = torch.randn(2, 6, 9, dtype=torch.float64, requires_grad=True)
    logits = full[:, :-1]  # the usual shift: not contiguous, must not be copied or mis-strided
    target_ids = torch.randint(0, 9, (2, 5))
    got, entropy = ops.compute_logprobs(logits, target_ids, chunk_elements=10, return_entropy=True)
    torch.testing.assert_close(got, _naive_logprobs(logits, target_ids))
    p = torch.softmax(logits.detach(), dim=-1)
    torch.testing.assert_close(entropy, -(p * p.log()).sum(-1))
    got.sum().backward()
    ref_full = full.detach().clone().requires_grad_(True)
    _naive_logprobs(ref_full[:, :-1], target_ids).sum().backward()
    torch.testing.assert_close(full.grad, ref_full.grad)


def test_compute_logprobs_bf16_returns_fp32_close_to_fp64():
    torch.manual_seed(3)
    logits = (torch.randn(2, 4, 50) * 3).bfloat16()
    target_ids = torch.randint(0, 50, (2, 4))
    got = ops.compute_logprobs(logits, target_ids, chunk_elements=64)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), _naive_logprobs(logits.double(), target_ids), rtol=1e-6, atol=1e-5
    )


def test_compute_logprobs_rejects_bad_input():
    logits = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"target_ids must be \[B, T\]"):
        ops.compute_logprobs(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must lie in \[0, V=4\)"):
        ops.compute_logprobs(logits, torch.full((2, 3), 4))
    with pytest.raises(ValueError, match="valid: auto, fused, chunked"):
        ops.compute_logprobs(logits, torch.zeros(2, 3, dtype=torch.long), impl="triton")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ops.compute_logprobs(logits, torch.zeros(2, 3, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match=r"logits must be \[B, T, V\]"):
        ops.compute_logprobs(torch.randn(3, 4), torch.zeros(3, dtype=torch.long))


def test_compute_ratio_and_kl_hand_computed():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64)
    other = torch.tensor([[-1.5, -1.0, float("-inf")]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0]])
    ratio = ops.compute_ratio(logp, other, mask)
    torch.testing.assert_close(ratio, torch.tensor([[math.exp(0.5), math.exp(-1), 1.0]], dtype=torch.float64))
    # d = logp - ref = 0.5 and -1.0
    k1 = ops.compute_kl(logp, other, mask, "k1")
    k2 = ops.compute_kl(logp, other, mask, "k2")
    k3 = ops.compute_kl(logp, other, mask, "k3")
    torch.testing.assert_close(k1, torch.tensor([[0.5, -1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(k2, torch.tensor([[0.125, 0.5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(
        k3, torch.tensor([[math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1, 0.0]], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="valid kinds: k1, k2, k3"):
        ops.compute_kl(logp, other, mask, "k4")


# values: row 0 has 3 tokens (1, 2, 3), row 1 has 1 token (10), row 2 none (its 100 must never count).
_VALUES = torch.tensor([[1.0, 2.0, 3.0, 50.0], [10.0, 7.0, 7.0, 7.0], [100.0, 100.0, 100.0, 100.0]])
_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    "mode, expected, denominator",
    [
        ("token-mean", (1 + 2 + 3 + 10) / 4, 4.0),
        ("seq-mean-token-sum", ((1 + 2 + 3) + 10) / 2, 2.0),
        ("seq-mean-token-mean", ((1 + 2 + 3) / 3 + 10 / 1) / 2, 2.0),
        ("fixed_horizon", (1 + 2 + 3 + 10) / (3 * 8), 24.0),
    ],
)
def test_aggregate_hand_computed(mode, expected, denominator):
    got = ops.aggregate(_VALUES, _MASK, mode, horizon=8)
    assert got.item() == pytest.approx(expected)
    assert ops.normalizer(_MASK, mode, horizon=8) == denominator
    # An explicit normaliser only replaces the denominator.
    assert ops.aggregate(_VALUES, _MASK, mode, horizon=8, normalizer=5.0).item() == pytest.approx(
        expected * denominator / 5.0
    )


def test_aggregate_all_masked_is_zero_and_errors_are_specific():
    zero = ops.aggregate(_VALUES, torch.zeros_like(_MASK), "token-mean")
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="valid modes: token-mean, seq-mean-token-sum"):
        ops.aggregate(_VALUES, _MASK, "mean")
    with pytest.raises(ValueError, match="needs horizon > 0"):
        ops.aggregate(_VALUES, _MASK, "fixed_horizon")
    with pytest.raises(ValueError, match="normalizer must be > 0"):
        ops.aggregate(_VALUES, _MASK, "token-mean", normalizer=0.0)
    with pytest.raises(ValueError, match="mask must have the shape"):
        ops.aggregate(_VALUES, _MASK[:, :2], "token-mean")


def test_entropy_and_logprobs_with_masked_out_vocabulary():
    logits = torch.tensor([[[0.0, 1.0, float("-inf"), 2.0]]], dtype=torch.float64, requires_grad=True)
    logp, entropy = ops.compute_logprobs(logits, torch.tensor([[3]]), return_entropy=True)
    p = torch.softmax(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), -1)
    assert logp.item() == pytest.approx(math.log(p[2]))
    assert entropy.item() == pytest.approx(float(-(p * p.log()).sum()))
    logp.sum().backward()
    want = torch.tensor([-p[0], -p[1], 0.0, 1 - p[2]], dtype=torch.float64)
    torch.testing.assert_close(logits.grad[0, 0], want)
