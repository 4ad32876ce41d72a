"""Generation throughput benchmark (issue 5, item 5b/5c): the Generator actor vs raw ``vllm.LLM.generate``.

Both engines run the same model with the same engine args and sampling (``n`` samples per prompt, ``max_tokens``
new tokens with ``ignore_eos``, the sampled token's log-prob, no detokenisation) and stay alive side by side;
rounds alternate raw / actor so that drifting machine load hits both. The actor path sends every prompt as its own
concurrent ``generate`` call through Monarch (continuous batching happens in the engine); the raw path hands the
whole list to one ``LLM.generate``. Tokens/s counts generated tokens only. Goal: actor >= 0.9x raw.

    python benchmarks/bench_generator.py                                             # CPU, tiny model
    python benchmarks/bench_generator.py --device cuda --model-shape qwen3-1.7b      # H100, bf16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_weight_sync import SHAPES, build_shape


def _prompts(num: int, length: int) -> list[list[int]]:
    """Distinct token-id prompts (no shared prefix beyond one token), byte ids 33..126."""
    return [[33 + (i * 7 + j * 13) % 94 for j in range(length)] for i in range(num)]


def _engine_args(args, model_dir: str) -> dict:
    ea = {"model": model_dir, "max_model_len": args.prompt_len + args.max_tokens + 8, "seed": 0,
          "logprobs_mode": "processed_logprobs", "dtype": SHAPES[args.model_shape][-1]}
    if args.device == "cuda":
        ea["gpu_memory_utilization"] = 0.4  # two engines share the card
    else:
        ea["enforce_eager"] = True
    return ea


async def run(args) -> None:
    from vllm import LLM, SamplingParams

    from forge.actors.generator import Generator

    model_dir = args.model_dir or build_shape(args.model_shape, args.cache_dir)
    prompts = _prompts(args.prompts, args.prompt_len)
    sampling = {"n": args.n, "max_tokens": args.max_tokens, "ignore_eos": True, "temperature": 1.0,
                "logprobs": 0, "detokenize": False}
    engine_args = _engine_args(args, model_dir)
    print(f"model {args.model_shape}: {args.prompts} prompts x n={args.n} x {args.max_tokens} tokens, "
          f"device {args.device}")

    llm = LLM(**engine_args)
    gen = await Generator.options(procs=1, with_gpus=args.device == "cuda").as_actor(
        engine_args={k: v for k, v in engine_args.items() if k != "logprobs_mode"}, sampling_params=sampling)
    try:
        def raw_round() -> tuple[float, int]:
            t0 = time.perf_counter()
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(**sampling),
                                use_tqdm=False)
            dt = time.perf_counter() - t0
            return dt, sum(len(c.token_ids) for o in outs for c in o.outputs)

        async def actor_round() -> tuple[float, int]:
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(gen.generate.call_one(p) for p in prompts))
            dt = time.perf_counter() - t0
            return dt, sum(len(c.token_ids) for comps in outs for c in comps)

        raw_round()  # warm-up both paths
        await actor_round()
        raw_tps, actor_tps = [], []
        for r in range(args.rounds):
            dt, n = raw_round()
            raw_tps.append(n / dt)
            dt2, n2 = await actor_round()
            actor_tps.append(n2 / dt2)
            assert n == n2 == args.prompts * args.n * args.max_tokens, (n, n2)
            print(f"  round {r}: raw {raw_tps[-1]:,.0f} tok/s   actor {actor_tps[-1]:,.0f} tok/s")
        raw_med, actor_med = statistics.median(raw_tps), statistics.median(actor_tps)
        print(f"\nmedian: raw LLM.generate {raw_med:,.0f} tok/s, Generator actor {actor_med:,.0f} tok/s, "
              f"ratio actor/raw = {actor_med / raw_med:.3f}x")
    finally:
        await Generator.shutdown(gen)
        llm.llm_engine.engine_core.shutdown()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model-shape", default=None, help=f"one of {sorted(SHAPES)} (default: tiny on CPU, "
                                                          "qwen3-1.7b on CUDA)")
    p.add_argument("--model-dir", default=None, help="use this HF folder instead of building --model-shape")
    p.add_argument("--prompts", type=int, default=None, help="prompts per round (CPU 64, CUDA 64)")
    p.add_argument("--n", type=int, default=None, help="samples per prompt (CPU 4, CUDA 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="new tokens per sample (CPU 64, CUDA 512)")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt length in tokens")
    p.add_argument("--rounds", type=int, default=None, help="measured rounds per path, alternating (CPU 7, CUDA 3)")
    p.add_argument("--cache-dir", default=tempfile.gettempdir(), help="where built model folders are cached")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    args.model_shape = args.model_shape or ("qwen3-1.7b" if gpu else "tiny")
    args.prompts = args.prompts or 64  # CUDA: 64 x 8 x 512 = 262k tokens a round keeps the run under 10 min
    args.rounds = args.rounds or (3 if gpu else 7)
    args.n = args.n or (8 if gpu else 4)
    args.max_tokens = args.max_tokens or (512 if gpu else 64)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
