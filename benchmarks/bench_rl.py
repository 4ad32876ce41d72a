"""RL core benchmark: forge's ``compute_logprobs`` vs the naive ``log_softmax(logits.float()).gather``.

Measures, side by side in one run, forward + backward time and peak memory beyond the logits (and their
gradient) for:
  naive     torch.log_softmax(logits.float() / τ, -1).gather(target)   (a full fp32 [B, T, V] copy lives on)
  chunked   compute_logprobs(logits, target, τ, impl="chunked")        (eager; fp32 only per chunk)
  fused     compute_logprobs(logits, target, τ, impl="fused")          (torch.compile; CUDA only here)
  loss      forge's GRPO loss from logits (default impl + entropy metric + loss + backward)

    python benchmarks/bench_rl.py           # CPU: B=4, T=512, V=32000 (peak RSS, one process per variant)
    python benchmarks/bench_rl.py --device cuda --batch 8 --seq 2048 --vocab 151936   # GPU, peak allocated
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def _logits(args, device):
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(args.batch, args.seq, args.vocab, generator=g, device=device, dtype=torch.bfloat16)
    target = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g, device=device)
    return logits.requires_grad_(True), target


def _step(variant, logits, target, chunk_elements=None):
    from forge.rl.loss import build_loss
    from forge.rl.loss.ops import compute_logprobs

    if variant == "naive":
        logp = torch.log_softmax(logits.float() / 0.9, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        logp.sum().backward()
    elif variant in ("chunked", "fused"):
        kwargs = {} if chunk_elements is None else {"chunk_elements": chunk_elements}
        compute_logprobs(logits, target, 0.9, impl=variant, **kwargs).sum().backward()
    else:
        b, t = target.shape
        mask = torch.ones(b, t, device=logits.device)
        gen = torch.full((b, t), -12.0, device=logits.device)
        adv = torch.linspace(-1, 1, b, device=logits.device)
        loss, _ = build_loss("grpo")(
            logits=logits,
            target_ids=target,
            advantages=adv,
            generator_logprobs=gen,
            loss_mask=mask,
            temperature=0.9,
        )
        loss.backward()


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def measure(variant, args):
    """(seconds per forward+backward, peak bytes beyond logits + their gradient buffer)."""
    device = args.device
    logits, target = _logits(args, device)
    # CPU: the RSS high-water mark from here on (the warm-up does the same work, so the same peak).
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _step(variant, logits, target, args.chunk_elements)  # warm-up (allocator, kernels)
    logits.grad = None
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _step(variant, logits, target, args.chunk_elements)
        _sync(device)
        times.append(time.perf_counter() - t0)
        logits.grad = None
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    grad_bytes = logits.numel() * logits.element_size()  # any method must produce this gradient
    return sorted(times)[len(times) // 2], max(peak - grad_bytes, 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-elements", type=int, default=None, help="chunk size of the chunked variant")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: one variant, JSON out
    args = p.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args)))
        return
    logits_gib = args.batch * args.seq * args.vocab * 2 / 2**30
    print(f"device={args.device} B={args.batch} T={args.seq} V={args.vocab} bf16 logits={logits_gib:.2f} GiB")
    results = {}
    variants = (
        ("naive", "chunked", "fused", "loss") if args.device == "cuda" else ("naive", "chunked", "loss")
    )
    for variant in variants:
        if args.device == "cpu":  # RSS is a per-process high-water mark: one fresh process per variant
            cmd = [sys.executable, __file__, "--variant", variant] + sys.argv[1:]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[variant] = json.loads(out.strip().splitlines()[-1])
        else:
            results[variant] = measure(variant, args)
            torch.cuda.empty_cache()
        secs, peak = results[variant]
        print(f"{variant:8s} fwd+bwd {secs * 1e3:9.1f} ms   extra peak memory {peak / 2**30:7.3f} GiB")
    n_s, n_m = results["naive"]
    for variant in variants[1:]:
        v_s, v_m = results[variant]
        print(f"{variant}/naive: time {v_s / n_s:.2f}x, extra peak memory {v_m / max(n_m, 1):.4f}x")


if __name__ == "__main__":
    main()
