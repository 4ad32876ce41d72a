"""Trainer overhead: ``TitanTrainer.train_step`` through the actor vs a raw PyTorch loop, side by side.

Three ways to run the same optimizer steps on the same model, batch and optimizer, in one script:
  raw     a hand-written loop in this file: HF model, ``fully_shard`` per layer + root (1-device mesh), the same
          mixed precision / activation checkpointing, token-mean cross-entropy, AdamW, clipping
  engine  ``forge.engines.training.TrainingEngine.train_step`` in this process
  actor   ``await TitanTrainer.train_step.call(batch)`` through a Monarch process (``--no-actor`` skips it)
Prints median step times, tokens/s, and the ratios engine/raw and actor/raw (goal: actor ≤ 1.05× raw).

    python benchmarks/bench_trainer.py                                   # CPU, tiny Qwen3 shape, fp32
    python benchmarks/bench_trainer.py --device cuda --model-shape qwen3-1.7b   # bf16, AC, batch 8×2048, MFU

Models are random-init Qwen3 configs written to a temp dir (``model.random_init``): no weights on disk.
MFU = tokens/s × (6·N + 12·L·H·T attention) / peak bf16 dense FLOP/s (989 TFLOP/s for H100/H200 SXM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    # Qwen/Qwen3-1.7B's config.json (architecture numbers only).
    "qwen3-1.7b": {
        "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True,
        "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    },
    # Same architecture class at a size two CPU cores step in well under a second.
    "tiny": {
        "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 512, "tie_word_embeddings": True,
        "max_position_embeddings": 1024, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    },
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def write_config(shape: str, out: Path) -> Path:
    from transformers import Qwen3Config

    Qwen3Config(**SHAPES[shape], dtype="bfloat16").save_pretrained(str(out))
    return out


def make_batch(rows: int, seq: int, vocab: int, seed: int = 0):
    from forge.types import TextTrainBatch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, seq + 1), generator=g)
    return TextTrainBatch(input_ids=ids[:, :-1], target_ids=ids[:, 1:], target_mask=torch.ones(rows, seq))


def trainer_tree(args, model_dir: Path) -> dict:
    return {
        "model": {"path": str(model_dir), "random_init": True},
        "optimizer": {"lr": 1e-5},
        "training": {"micro_batch_size": args.micro_batch, "max_norm": 1.0, "device": args.device_spec},
        "activation_checkpoint": {"mode": "full" if args.ac else "none"},
    }


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---- the three steppers: start() builds, step() runs one timed optimizer step, stop() frees -------------------
class RawLoop:
    """A plain FSDP2 loop written here from torch + transformers only (the baseline)."""

    label = "raw"

    def __init__(self, args, model_dir: Path, batch):
        self.args, self.model_dir, self.batch = args, model_dir, batch

    async def start(self) -> None:
        import torch.distributed as dist
        from torch.distributed._composable import checkpoint
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        from transformers import AutoConfig, AutoModelForCausalLM

        args = self.args
        device = torch.device(args.device_spec)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.model_dir),
                                                     dtype=torch.float32, attn_implementation="sdpa")
        model.config.use_cache = False
        bf16 = device.type == "cuda"
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else torch.float32,
                                  reduce_dtype=torch.float32)
        mesh = init_device_mesh(device.type, (1,))
        layers = list(model.model.layers)
        for i, layer in enumerate(layers):
            if args.ac:
                checkpoint(layer)
            fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(layers) - 1)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True if bf16 else None)
        self.ids, self.tgt = self.batch.input_ids.to(device), self.batch.target_ids.to(device)

    async def step(self) -> None:
        import torch.nn.functional as F

        mb = self.args.micro_batch
        for s in range(0, self.ids.shape[0], mb):
            logits = self.model(input_ids=self.ids[s : s + mb]).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), self.tgt[s : s + mb].flatten(),
                                   reduction="sum") / self.tgt.numel()
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # the engine reads the norm too

    async def stop(self) -> None:
        del self.model, self.opt


class EngineLoop(RawLoop):
    """forge's TrainingEngine in this process."""

    label = "engine"

    async def start(self) -> None:
        from forge.engines.training import TrainerConfig, TrainingEngine

        self.engine = TrainingEngine(TrainerConfig.from_dict(trainer_tree(self.args, self.model_dir)))
        self.engine.setup()

    async def step(self) -> None:
        self.engine.train_step(self.batch)

    async def stop(self) -> None:
        self.engine.cleanup()
        del self.engine


class ActorLoop(RawLoop):
    """TitanTrainer in its own Monarch process: ``await trainer.train_step.call(batch)``."""

    label = "actor"

    async def start(self) -> None:
        from forge.actors.trainer import TitanTrainer

        self.cls = TitanTrainer
        self.trainer = await TitanTrainer.options(procs=1, with_gpus=self.args.device == "cuda").as_actor(
            **trainer_tree(self.args, self.model_dir))

    async def step(self) -> None:
        await self.trainer.train_step.call(self.batch)

    async def stop(self) -> None:
        await self.cls.shutdown(self.trainer)


async def timed(loop, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    await loop.step()
    sync(device)
    return time.perf_counter() - t0


async def measure(args, loops) -> tuple[dict[str, list[float]], dict[str, float | None]]:
    """CUDA: one loop at a time (each needs the whole GPU). CPU: all loops built, steps interleaved round-robin,
    so the load of a shared machine hits every variant alike."""
    cuda = args.device == "cuda"
    times = {lp.label: [] for lp in loops}
    peaks: dict[str, float | None] = {lp.label: None for lp in loops}
    if cuda:
        for lp in loops:
            await lp.start()
            for i in range(args.warmup + args.steps):
                t = await timed(lp, args.device)
                if i >= args.warmup:
                    times[lp.label].append(t)
            if lp.label != "actor":
                peaks[lp.label] = torch.cuda.max_memory_allocated() / 2**30
            await lp.stop()
            free(args.device)
        return times, peaks
    for lp in loops:
        await lp.start()
    for i in range(args.warmup + args.steps):
        for j in range(len(loops)):  # rotate the order each round: no variant always runs first
            lp = loops[(i + j) % len(loops)]
            t = await timed(lp, args.device)
            if i >= args.warmup:
                times[lp.label].append(t)
    for lp in reversed(loops):
        await lp.stop()
    return times, peaks


def free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model-shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--batch", type=int, default=None, help="rows (default 8)")
    p.add_argument("--seq", type=int, default=None, help="tokens per row (default 2048 on cuda, 128 on cpu)")
    p.add_argument("--micro-batch", type=int, default=None, help="rows per forward (default = batch)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10 cuda, 20 cpu)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-ac", dest="ac", action="store_false", help="disable activation checkpointing")
    p.add_argument("--no-actor", dest="actor", action="store_false", help="skip the Monarch actor path")
    p.add_argument("--json", type=str, default=None, help="also write the results here")
    args = p.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    args.batch = args.batch or 8
    args.seq = args.seq or (2048 if cuda else 128)
    args.micro_batch = args.micro_batch or args.batch
    args.steps = args.steps or (10 if cuda else 20)
    args.device_spec = "cuda:0" if cuda else "cpu"

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_config(args.model_shape, Path(tmp) / "model")
        batch = make_batch(args.batch, args.seq, SHAPES[args.model_shape]["vocab_size"])
        kinds = [RawLoop, EngineLoop] + ([ActorLoop] if args.actor else [])
        results, peaks = asyncio.run(measure(args, [k(args, model_dir, batch) for k in kinds]))
        report(args, model_dir, results, peaks)


def report(args, model_dir: Path, results: dict[str, list[float]], peaks: dict[str, float | None]) -> None:
    from transformers import AutoConfig

    from forge.engines.training.modeling import model_flops_per_token

    tokens = args.batch * args.seq
    flops = model_flops_per_token(AutoConfig.from_pretrained(model_dir), args.seq)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak_flops = next((v for k, v in PEAK_BF16.items() if k in name), None)
    print(f"device={name} shape={args.model_shape} batch={args.batch}x{args.seq} micro_batch={args.micro_batch} "
          f"ac={args.ac} steps={args.steps} (after {args.warmup} warmup)")
    out = {"args": {k: v for k, v in vars(args).items()}, "device": name, "peak_mem_gib": peaks}
    base, base_min = statistics.median(results["raw"]), min(results["raw"])
    for label, times in results.items():
        med, best = statistics.median(times), min(times)
        tps = tokens / med
        mfu = tps * flops / peak_flops if peak_flops else None
        mfu_s = f"  MFU {100 * mfu:5.1f}%" if mfu is not None else ""
        print(f"{label:7s} median {med * 1000:9.1f} ms/step  {tps:12,.0f} tok/s  ratio {med / base:5.3f}x  "
              f"(min {best * 1000:.1f} ms, ratio {best / base_min:5.3f}x){mfu_s}")
        out[label] = {"median_s": med, "min_s": best, "tokens_per_s": tps, "ratio_vs_raw": med / base,
                      "min_ratio_vs_raw": best / base_min, "mfu": mfu, "times": times}
    if peaks.get("raw") is not None:
        # The actor's peak lives in another process and is not measured here.
        print("peak GPU memory: " + ", ".join(f"{k} {v:.1f} GiB" for k, v in peaks.items() if v is not None))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
