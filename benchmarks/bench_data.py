"""Data and observability costs, each next to a baseline measured in the same run.

1. SFT packing vs padding: the share of batch positions holding a document token, and the time of one epoch of
   forward+backward on forge's tiny model over the same documents (variable-length chat data and the
   near-fixed-length arithmetic task).
2. record_metric: µs per call through the per-run metrics directory vs a plain in-memory ``list.append`` of the
   same record, and the controller's collect + reduce time per record.

    python benchmarks/bench_data.py
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

PAD = 259  # the byte tokenizer's <|pad|>
REPEATS = 3


def one_epoch(batcher) -> list:
    """Batches until every document of the dataset has been drawn once."""
    batches = []
    n = len(batcher.dataset)
    while batcher.sampler.epoch == 0 and batcher.sampler.position < n:
        batches.append(batcher.next_batch())
    return batches


def sft_epoch(batches, model) -> tuple[float, float]:
    """(share of positions holding a document token, seconds of forward+backward) over ``batches``."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    filled = positions = 0
    t0 = time.perf_counter()
    for b in batches:
        logits = model(input_ids=b.input_ids, position_ids=b.position_ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b.target_ids.flatten(), reduction="none")
        (loss * b.target_mask.flatten()).sum().backward()
        opt.step()
        opt.zero_grad()
        filled += int((b.target_ids != PAD).sum())
        positions += b.target_ids.numel()
    return filled / positions, time.perf_counter() - t0


def bench_packing() -> None:
    from transformers import AutoModelForCausalLM

    from forge.data import SFTBatcher, arithmetic_dataset, reasoning_gym_dataset
    from forge.models import build_byte_tokenizer, build_tiny_model

    torch.set_num_threads(2)
    tok = build_byte_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tempfile.mkdtemp()))
    cases = {
        "chat (reasoning-gym basic_arithmetic, chat template, 64 docs)": (
            reasoning_gym_dataset("basic_arithmetic", size=64, seed=0, system_prompt=None), True, 128),
        "arithmetic a+b (raw, 256 docs)": (arithmetic_dataset("sft", max_samples=256), False, 64),
    }
    for name, (ds, chat, seq_len) in cases.items():
        epochs = {}
        for pack, rows in ((False, 16), (True, 4)):
            batcher = SFTBatcher(ds, tok, batch_size=rows, seq_len=seq_len, pack=pack, chat_template=chat,
                                 shuffle=False)
            epochs[pack] = one_epoch(batcher)
        sft_epoch(epochs[False][:2], model)  # warm-up (first-call allocations)
        fill, best = {}, {False: float("inf"), True: float("inf")}
        for _ in range(REPEATS):  # alternate and keep the fastest: robust to other load on a shared machine
            for pack in (False, True):
                fill[pack], secs = sft_epoch(epochs[pack], model)
                best[pack] = min(best[pack], secs)
        print(f"{name}: filled positions padded {fill[False]:.1%} packed {fill[True]:.1%}; one epoch (best of "
              f"{REPEATS}) padded {best[False]:.2f} s packed {best[True]:.2f} s (speed-up x{best[False] / best[True]:.2f})")


def bench_metrics(n: int = 20_000) -> None:
    from forge.observability import MetricCollector, record_metric, reduce_records, set_metrics_dir

    base: list[dict] = []
    t0 = time.perf_counter()
    for i in range(n):
        base.append({"k": "loss/kl", "v": float(i), "r": "mean", "t": time.time()})
    t_base = (time.perf_counter() - t0) / n
    d = tempfile.mkdtemp()
    collector = MetricCollector(d)
    set_metrics_dir(d)
    t0 = time.perf_counter()
    for i in range(n):
        record_metric("loss/kl", float(i), "mean")
    t_rec = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    out = reduce_records(collector.collect())
    t_col = (time.perf_counter() - t0) / n
    set_metrics_dir(None)
    assert out["loss/kl"] == (n - 1) / 2
    print(f"record_metric: {t_rec * 1e6:.1f} µs/call vs list.append {t_base * 1e6:.2f} µs (x{t_rec / t_base:.0f}); "
          f"collect+reduce {t_col * 1e6:.1f} µs/record")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    bench_metrics()
    bench_packing()
