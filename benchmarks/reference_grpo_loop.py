"""Plain-PyTorch GRPO on the CPU demo's task: the reference the demo's learning curve is judged against.

One process, no actors, no vLLM: sample a group per prompt with the model itself, score with forge's scorers,
group-normalised advantages, token-mean policy gradient (on-policy, so the clipped ratio is 1), AdamW, grad clip 1.
About 0.12-0.25 s a step on 2 cores, so it screens an SFT checkpoint in under two minutes where the full demo takes
nine. That is how the demo's SFT seed was chosen (docs/PERFORMANCE.md, "End-to-end GRPO"): the GRPO gain depends
far more on the checkpoint SFT stops at than on any RL setting, and this loop and `make demo` agree on which
checkpoints are good.

    # GRPO from a warm start the app made (e.g. the cached one under $FORGE_CACHE_DIR/sft/):
    python benchmarks/reference_grpo_loop.py --init ~/.cache/forge/sft/sft-demo-arith-<hash>
    # or SFT here first (plain loop, stop at the first held-out check >= --sft-stop), then GRPO:
    python benchmarks/reference_grpo_loop.py --seed 1 --reward exact

Prints one JSON line per evaluation: held-out greedy exact-match accuracy (the first 1,000 test pairs) and the
gain over the starting checkpoint, i.e. the ratio the demo is measured by.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time

import torch
import torch.nn.functional as F

from forge.data import arithmetic_pairs, arithmetic_sample, score_response

PROMPT_LEN = 6  # "07+42=" in the byte tokenizer: one token per character


def _encode(text: str) -> list[int]:
    return list(text.encode())


@torch.no_grad()
def _sample(model, prompts: list[str], greedy: bool, temperature: float, eos: int, pad: int, max_tokens: int = 4):
    """[N, PROMPT_LEN + t] prompt + response ids; after EOS every position is ``pad``."""
    ids = torch.tensor([_encode(p) for p in prompts])
    done = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(max_tokens):
        logits = model(ids).logits[:, -1].float()
        tok = logits.argmax(-1) if greedy else torch.multinomial(F.softmax(logits / temperature, -1), 1)[:, 0]
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        done |= tok == eos
        ids = torch.cat([ids, tok[:, None]], 1)
        if done.all():
            break
    return ids


def _texts(ids: torch.Tensor, eos: int) -> list[str]:
    out = []
    for row in ids[:, PROMPT_LEN:].tolist():
        chars = bytearray()
        for t in row:
            if t >= 256 or t == eos:  # EOS, pad or another special token ends the answer
                break
            chars.append(t)
        out.append(chars.decode(errors="replace"))
    return out


def held_out_accuracy(model, test, eos: int, pad: int) -> float:
    model.eval()
    ids = _sample(model, [s.prompt for s in test], True, 1.0, eos, pad)
    model.train()
    return sum(score_response(t, s) for t, s in zip(_texts(ids, eos), test)) / len(test)


def sft(model, args, test, eos: int, pad: int) -> int:
    """Cross-entropy on the answer tokens until the first check with held-out accuracy >= ``args.sft_stop``."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.sft_lr, weight_decay=0.0)
    pairs, rng = arithmetic_pairs("sft"), random.Random(args.seed)
    for step in range(1, args.sft_max_steps + 1):
        seqs = [_encode(f"{a:02d}+{b:02d}={a + b}") + [eos] for a, b in (rng.choice(pairs) for _ in range(64))]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        labels = ids.clone()
        labels[:, :PROMPT_LEN] = -100
        labels[ids == pad] = -100
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 and held_out_accuracy(model, test, eos, pad) >= args.sft_stop:
            return step
    return args.sft_max_steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", default="", help="HF directory to start GRPO from (default: SFT a tiny model here)")
    p.add_argument("--seed", type=int, default=0, help="tiny-model init and data order")
    p.add_argument("--sft-stop", type=float, default=0.25)
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--sft-max-steps", type=int, default=6000)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--reward", choices=["exact", "digits"], default="digits")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from transformers import AutoModelForCausalLM

    from forge.models.tiny import TinyModelSpec, build_tiny_model

    test = [arithmetic_sample(a, b) for a, b in arithmetic_pairs("test")[:1000]]  # exact match, as the demo
    t0 = time.time()
    if args.init:
        model, sft_steps = AutoModelForCausalLM.from_pretrained(args.init, dtype=torch.float32), 0
    else:
        path = build_tiny_model(tempfile.mkdtemp(prefix="forge-ref-grpo-"), TinyModelSpec(seed=args.seed))
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    if not args.init:
        sft_steps = sft(model, args, test, eos, pad)
    before = held_out_accuracy(model, test, eos, pad)
    print(json.dumps({"phase": "start", "sft_steps": sft_steps, "sft_s": round(time.time() - t0, 1),
                      "accuracy": before}), flush=True)

    rl = [arithmetic_sample(a, b, args.reward) for a, b in arithmetic_pairs("rl")]
    rng = random.Random(args.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        samples = [rng.choice(rl) for _ in range(args.prompts)]
        model.eval()
        ids = _sample(model, [s.prompt for s in samples for _ in range(args.group)], False, args.temperature,
                      eos, pad)
        model.train()
        rewards = torch.tensor([score_response(t, s) for t, s in
                                zip(_texts(ids, eos), (s for s in samples for _ in range(args.group)))])
        r = rewards.view(args.prompts, args.group)
        advantages = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)  # GRPO, per group
        response = ids[:, PROMPT_LEN:]
        mask = (response != pad).float()
        logits = model(ids).logits[:, PROMPT_LEN - 1 : -1].float() / args.temperature
        logprobs = torch.log_softmax(logits, -1).gather(-1, response.clamp(max=logits.shape[-1] - 1)[..., None])
        loss = -(advantages[:, None] * logprobs[..., 0] * mask).sum() / mask.sum()  # token-mean
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0:
            acc = held_out_accuracy(model, test, eos, pad)
            print(json.dumps({"step": step, "s": round(time.time() - t0, 1), "accuracy": acc,
                              "gain_points": round(100 * (acc - before), 1), "reward": round(r.mean().item(), 3)}),
                  flush=True)


if __name__ == "__main__":
    main()
