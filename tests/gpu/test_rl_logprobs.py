"""forge.rl.loss.logprobs on CUDA: the fused (torch.compile) path against fp64 references, and its memory."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from forge.rl.loss import LossInput, build_loss  # noqa: E402
from forge.rl.loss.logprobs import compute_logprobs  # noqa: E402


def _naive(logits, target_ids, temperature):
    x = logits.double() / temperature
    return torch.log_softmax(x, -1).gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("impl", ["fused", "chunked"])
def test_cuda_logprobs_entropy_and_gradient_match_fp64(impl):
    torch.manual_seed(0)
    full = (torch.randn(3, 41, 5003, device="cuda") * 3).bfloat16().requires_grad_(True)
    logits = full[:, :-1]  # a non-contiguous view, as a trainer slices it
    target = torch.randint(0, 5003, (3, 40), device="cuda")
    logp, entropy = compute_logprobs(
        logits, target, 0.7, impl=impl, chunk_elements=50_000, return_entropy=True
    )
    ref = _naive(logits.detach(), target, 0.7)
    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp.double(), ref, rtol=0, atol=2e-5)
    p = torch.softmax(logits.detach().double() / 0.7, -1)
    torch.testing.assert_close(entropy.double(), -(p * p.log()).sum(-1), rtol=0, atol=2e-4)
    upstream = torch.randn(3, 40, device="cuda")
    (grad,) = torch.autograd.grad((logp * upstream).sum(), full)
    ref_in = logits.detach().double().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad((_naive(ref_in, target, 0.7) * upstream.double()).sum(), ref_in)
    assert grad.dtype == torch.bfloat16 and grad[:, -1].abs().max() == 0
    torch.testing.assert_close(
        grad[:, :-1].double(), ref_grad, rtol=0, atol=2e-2 * ref_grad.abs().max().item()
    )


def test_fused_gradcheck_fp64():
    logits = torch.randn(2, 3, 7, dtype=torch.float64, device="cuda", requires_grad=True)
    target = torch.randint(0, 7, (2, 3), device="cuda")
    assert torch.autograd.gradcheck(lambda x: compute_logprobs(x, target, 0.8, impl="fused"), (logits,))


def test_fused_peak_memory_has_no_fp32_copy_of_the_logits():
    torch.manual_seed(1)
    logits = torch.randn(4, 512, 32000, device="cuda").bfloat16().requires_grad_(True)
    target = torch.randint(0, 32000, (4, 512), device="cuda")
    compute_logprobs(logits, target, impl="fused").sum().backward()  # compile outside the measurement
    logits.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    compute_logprobs(logits, target, impl="fused").sum().backward()
    torch.cuda.synchronize()
    extra = (
        torch.cuda.max_memory_allocated() - base - logits.numel() * logits.element_size()
    )  # minus the grad
    fp32_copy = logits.numel() * 4
    assert extra < 0.05 * fp32_copy, (
        f"extra peak {extra / 2**20:.1f} MiB vs an fp32 copy {fp32_copy / 2**20:.0f} MiB"
    )


def test_grpo_loss_on_cuda_equals_cpu_fp64():
    torch.manual_seed(2)
    logits = torch.randn(4, 16, 300, dtype=torch.float64)
    target = torch.randint(0, 300, (4, 16))
    mask = (torch.rand(4, 16) > 0.3).double()
    gen = -torch.rand(4, 16, dtype=torch.float64) * 5
    adv = torch.randn(4, dtype=torch.float64)
    loss_fn = build_loss("grpo", clip_low=0.2, clip_high=0.28)
    cpu_logp = _naive(logits, target, 1.0)
    want, _ = loss_fn.from_logprobs(LossInput(cpu_logp, gen, adv, mask))
    got, metrics = loss_fn(
        logits=logits.cuda().float(),
        target_ids=target.cuda(),
        advantages=adv.cuda().float(),
        generator_logprobs=gen.cuda().float(),
        loss_mask=mask.cuda().float(),
    )
    assert got.item() == pytest.approx(want.item(), abs=1e-5)
    assert set(metrics) >= {"loss/clip_frac", "loss/entropy", "loss/ratio_mean"}
