"""TrainingEngine at world size 1 (FSDP2 on a real one-process gloo group) against independent references."""

from __future__ import annotations

import math

import pytest
import torch

from forge.engines.training import LRSchedulerConfig, TrainerConfig, TrainingEngine, WarmupCosine
from forge.rl.loss import build_loss
from forge.types import RLBatch, TextTrainBatch

from . import plain

pytestmark = pytest.mark.timeout(120)
V = 260  # byte tokenizer: 256 bytes + 4 specials


def make_sft_batch(rows=4, seq=16, seed=0) -> TextTrainBatch:
    """Rows with very different trained-token counts, so per-micro-batch means would be wrong."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (rows, seq + 1), generator=g)
    mask = torch.zeros(rows, seq)
    for r in range(rows):
        mask[r, : 2 + (r * 5) % seq] = 1.0
    return TextTrainBatch(input_ids=ids[:, :-1], target_ids=ids[:, 1:], target_mask=mask)


def make_rl_batch(rows=4, seq=16, seed=1) -> RLBatch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (rows, seq + 1), generator=g)
    mask = torch.zeros(rows, seq)
    for r in range(rows):
        mask[r, 3 : 4 + (r * 4) % (seq - 3)] = 1.0
    gen = (-torch.rand(rows, seq, generator=g) * 3 - 4) * mask  # near the tiny model's ~log(1/260)
    return RLBatch(
        input_ids=ids[:, :-1], target_ids=ids[:, 1:], loss_mask=mask,
        advantages=torch.randn(rows, generator=g), generator_logprobs=gen,
    )


def engine(path, tmp_path=None, **sections) -> TrainingEngine:
    tree = {"model": {"path": path}, "training": {"micro_batch_size": 4, "max_norm": 1.0}}
    if tmp_path is not None:
        tree["checkpoint"] = {"folder": str(tmp_path / "ckpt")}
    for k, v in sections.items():
        tree[k] = {**tree.get(k, {}), **v}
    e = TrainingEngine(TrainerConfig.from_dict(tree))
    e.setup()
    return e


def grads(e: TrainingEngine) -> dict[str, torch.Tensor]:
    return {n: p.grad.full_tensor().clone() for n, p in e.model.named_parameters()}


def params(e: TrainingEngine) -> dict[str, torch.Tensor]:
    return {n: p.full_tensor().detach().clone() for n, p in e.model.named_parameters()}


def test_warmup_cosine_matches_formula():
    f = WarmupCosine(LRSchedulerConfig(warmup_steps=4, decay_steps=10, min_lr_factor=0.1))
    assert [f(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: 0.55
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    assert WarmupCosine(LRSchedulerConfig())(50) == 1.0


def test_config_rejects_bad_values():
    from forge.config import ConfigError

    with pytest.raises(ConfigError, match="micro_batch_size"):
        TrainerConfig.from_dict({"training": {"micro_batch_sise": 2}})
    with pytest.raises(ValueError, match="micro_batch_size must be >= 1"):
        TrainerConfig.from_dict({"training": {"micro_batch_size": 0}})
    with pytest.raises(ValueError, match="only 'AdamW'"):
        TrainerConfig.from_dict({"optimizer": {"name": "SGD"}})
    with pytest.raises(ValueError, match="activation_checkpoint.mode"):
        TrainerConfig.from_dict({"activation_checkpoint": {"mode": "selective"}})


def test_sft_steps_match_handwritten_adamw(tiny_model):
    """3 clipped AdamW steps through FSDP2 equal a hand-written AdamW on the unsharded HF model."""
    batches = [make_sft_batch(seed=s) for s in range(3)]
    e = engine(tiny_model, optimizer={"lr": 1e-3}, training={"micro_batch_size": 2})
    got = [e.train_step(b) for b in batches]
    ref = plain.load(tiny_model)
    want = plain.adamw_steps(ref, [(b.input_ids, b.target_ids, b.target_mask) for b in batches], 1e-3, 1.0)
    assert [m["loss"] for m in got] == pytest.approx(want, rel=1e-5)
    assert got[0]["trainer/grad_norm"] > 1.0  # clipping was active
    assert got[0]["trainer/num_tokens"] == float(batches[0].target_mask.sum())
    ours, theirs = params(e), dict(ref.named_parameters())
    for name, p in ours.items():
        torch.testing.assert_close(p, theirs[name].detach(), atol=2e-5, rtol=1e-4, msg=name)


def test_sft_micro_batches_equal_one_batch(tiny_model):
    """4 micro-batches of 1 row accumulate to the gradient of the whole batch (token-mean over the step)."""
    b = make_sft_batch()
    e = engine(tiny_model, training={"micro_batch_size": 1})
    res = e.forward_backward(b)
    ref = plain.load(tiny_model)
    loss = plain.sft_loss(ref, b.input_ids, b.target_ids, b.target_mask)
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-6)
    # The bug this guards against: averaging per-micro-batch token means gives a different number.
    naive = sum(plain.sft_loss(ref, b.input_ids[i : i + 1], b.target_ids[i : i + 1], b.target_mask[i : i + 1])
                for i in range(4)).item() / 4
    assert abs(naive - loss.item()) > 1e-3
    for name, g in grads(e).items():
        torch.testing.assert_close(g, dict(ref.named_parameters())[name].grad, atol=1e-6, rtol=1e-4, msg=name)


RL_MODES = [
    ("grpo", {}),  # seq-mean-token-mean
    ("dapo", {}),  # token-mean
    ("grpo", {"agg_type": "seq-mean-token-sum"}),
    ("dr_grpo", {"horizon": 16}),  # fixed_horizon
    ("gspo", {}),
]


@pytest.mark.parametrize("name,kwargs", RL_MODES, ids=[f"{n}-{k.get('agg_type', '')}" for n, k in RL_MODES])
def test_rl_micro_batches_equal_one_batch(tiny_model, name, kwargs):
    """For every aggregation mode: 4 micro-batches == the loss applied once to the whole batch (plain model)."""
    b = make_rl_batch()
    e = engine(tiny_model, training={"micro_batch_size": 1}, loss={"name": name, "kwargs": kwargs})
    res = e.forward_backward(b)
    ref = plain.load(tiny_model)
    loss, metrics = build_loss(name, **kwargs)(
        logits=ref(input_ids=b.input_ids).logits, target_ids=b.target_ids, advantages=b.advantages,
        generator_logprobs=b.generator_logprobs, loss_mask=b.loss_mask,
    )
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-5, abs=1e-7)
    assert res.metrics["loss/total"] == pytest.approx(metrics["loss/total"], rel=1e-5, abs=1e-7)
    if name != "gspo":  # GSPO's ratio is per sequence; the engine combines mean metrics token-weighted
        assert res.metrics["loss/ratio_mean"] == pytest.approx(metrics["loss/ratio_mean"], rel=1e-5)
    assert res.metrics["loss/num_tokens"] == metrics["loss/num_tokens"]
    for n, g in grads(e).items():
        torch.testing.assert_close(g, dict(ref.named_parameters())[n].grad, atol=1e-6, rtol=1e-4, msg=n)


def test_resume_is_bit_exact(tiny_model, tmp_path):
    """save(2) → fresh engine → load(2) → 2 more steps == 4 uninterrupted steps, bit for bit (fp32)."""
    sections = {
        "optimizer": {"lr": 3e-3, "weight_decay": 0.1},
        "lr_scheduler": {"warmup_steps": 2, "decay_steps": 3, "min_lr_factor": 0.1},
        "training": {"micro_batch_size": 2},
    }
    batches = [make_sft_batch(seed=s) for s in range(4)]
    a = engine(tiny_model, tmp_path, **sections)
    full = [a.train_step(b) for b in batches]
    want = params(a)
    want_opt = {k: v for k, v in a.optimizer.state_dict()["state"].items()}
    a.cleanup()

    b = engine(tiny_model, tmp_path, **sections)
    for batch in batches[:2]:
        b.train_step(batch)
    b.policy_version = 7
    b.save(2)
    b.cleanup()

    c = engine(tiny_model, tmp_path, **sections)
    assert c.load(2) == {"step": 2, "policy_version": 7}
    resumed = [c.train_step(batch) for batch in batches[2:]]
    assert [m["loss"] for m in resumed] == [m["loss"] for m in full[2:]]
    assert [m["trainer/lr"] for m in resumed] == [m["trainer/lr"] for m in full[2:]]
    assert c.step == 4
    for name, p in params(c).items():
        assert torch.equal(p, want[name]), name
    got_opt = c.optimizer.state_dict()["state"]
    for k, st in want_opt.items():
        for field in ("exp_avg", "exp_avg_sq", "step"):
            x, y = st[field], got_opt[k][field]
            x = x.full_tensor() if hasattr(x, "full_tensor") else x
            y = y.full_tensor() if hasattr(y, "full_tensor") else y
            assert torch.equal(x, y), (k, field)


def test_keep_latest_prunes_old_checkpoints(tiny_model, tmp_path):
    e = engine(tiny_model, tmp_path, checkpoint={"keep_latest": 2})
    for step in (1, 2, 3):
        e.save(step)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_2", "step_3"]
    with pytest.raises(FileNotFoundError, match="not a DCP checkpoint"):
        e.load(1)


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_tied_model"])
def test_export_then_from_pretrained_gives_identical_logits(fixture, request, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(fixture)
    e = engine(path, optimizer={"lr": 1e-2})
    b = make_sft_batch()
    e.train_step(b)  # export trained weights, not the ones on disk
    out = e.export(str(tmp_path / "hf"))
    with torch.no_grad():
        ours = e.model(input_ids=b.input_ids).logits
    fresh = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        theirs = fresh(input_ids=b.input_ids).logits
    assert torch.equal(ours, theirs)
    assert AutoTokenizer.from_pretrained(out).decode([104, 105]) == "hi"


def test_push_weights_then_load_gives_identical_logits(tiny_model, tmp_path):
    import asyncio

    from transformers import AutoConfig, AutoModelForCausalLM

    import forge.store as ws

    ws.configure(str(tmp_path / "store"))
    e = engine(tiny_model, optimizer={"lr": 1e-2})
    b = make_sft_batch()
    e.train_step(b)
    stats = asyncio.run(e.push_weights(3))
    assert stats["trainer/push_bytes_per_rank"] > 0
    assert ws.latest_version() == 3 and e.policy_version == 3
    state = asyncio.run(ws.get_state_dict(ws.policy_prefix(3)))
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model), dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    with torch.no_grad():
        assert torch.equal(e.model(input_ids=b.input_ids).logits, fresh(input_ids=b.input_ids).logits)


def test_activation_checkpointing_keeps_gradients(tiny_model):
    b = make_sft_batch()
    plain_e = engine(tiny_model)
    plain_e.forward_backward(b)
    want = grads(plain_e)
    ac = engine(tiny_model, activation_checkpoint={"mode": "full"})
    ac.forward_backward(b)
    for n, g in grads(ac).items():
        torch.testing.assert_close(g, want[n], atol=1e-7, rtol=1e-6, msg=n)


def test_bad_batches_raise_clear_errors(tiny_model):
    e = engine(tiny_model)
    b = make_sft_batch()
    with pytest.raises(ValueError, match=r"target_mask has shape \(4, 15\)"):
        e.forward_backward(TextTrainBatch(b.input_ids, b.target_ids, b.target_mask[:, 1:]))
    with pytest.raises(ValueError, match="configure a forge.rl.loss name"):
        e.forward_backward(make_rl_batch())
    with pytest.raises(TypeError, match="TextTrainBatch or RLBatch"):
        e.forward_backward({"input_ids": b.input_ids})
    with pytest.raises(RuntimeError, match="setup"):
        TrainingEngine(TrainerConfig()).train_step(b)


def test_reference_logprobs_equal_trainer_initial(tiny_model):
    """ReferenceEngine (chunked to 2 rows per forward) == the trainer's own log-probs == a float64 plain model."""
    from forge.engines.training import ReferenceConfig, ReferenceEngine
    from forge.engines.training.losses import token_logprobs

    b = make_rl_batch(rows=5)
    e = engine(tiny_model)
    with torch.no_grad():
        trainer_lp = token_logprobs(e.model(input_ids=b.input_ids).logits, b.target_ids)
    ref = ReferenceEngine(ReferenceConfig.from_dict({"model": {"path": tiny_model}, "max_tokens_per_forward": 32}))
    ref.setup()
    ref_lp = ref.logprobs(b)
    assert ref_lp.shape == (5, 16) and ref_lp.dtype == torch.float32
    torch.testing.assert_close(ref_lp, trainer_lp, atol=1e-6, rtol=0)
    want = plain.token_logprobs(plain.load(tiny_model), b.input_ids, b.target_ids)
    torch.testing.assert_close(ref_lp.double(), want, atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in ref.model.parameters())
    with pytest.raises(ValueError, match="needs target_ids"):
        ref.logprobs(b.input_ids)


def test_packed_rows_equal_separate_documents(tiny_model):
    """A packed SFT row (position_ids restarting per document) trains exactly like the documents on their own."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.randint(0, 256, (8,), generator=g), torch.randint(0, 256, (10,), generator=g)
    packed = TextTrainBatch(
        input_ids=torch.cat([a[:-1], b[:-1]])[None], target_ids=torch.cat([a[1:], b[1:]])[None],
        target_mask=torch.ones(1, 16), position_ids=torch.cat([torch.arange(7), torch.arange(9)])[None],
    )
    e = engine(tiny_model)
    res = e.forward_backward(packed)
    ref = plain.load(tiny_model)
    total = sum(-plain.token_logprobs(ref, d[None, :-1], d[None, 1:]).sum() for d in (a, b)) / 16
    total.backward()
    assert res.loss == pytest.approx(total.item(), rel=1e-6)
    for n, g_ in grads(e).items():
        torch.testing.assert_close(g_, dict(ref.named_parameters())[n].grad, atol=1e-6, rtol=1e-4, msg=n)
    unpacked = TextTrainBatch(packed.input_ids, packed.target_ids, packed.target_mask)  # cross-document attention
    e.clear_gradients()
    assert abs(e.forward_backward(unpacked).loss - total.item()) > 1e-4


def test_rl_step_logs_the_entropy_of_the_trained_tokens():
    from forge.engines.training.losses import build_step_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    targets = torch.randint(0, 11, (3, 5), generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.float32)
    batch = RLBatch(input_ids=targets, target_ids=targets, loss_mask=mask, advantages=torch.tensor([1.0, -1.0, 0.5]),
                    generator_logprobs=torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0] * mask)
    loss_fn = build_step_loss("grpo", {})
    _, metrics = loss_fn(logits, batch, loss_fn.normalizer(batch), temperature=0.5)
    p = torch.softmax(logits.double() / 0.5, -1)  # second implementation: H = -Σ p log p at the trained temperature
    entropy = -(p * p.log()).sum(-1)
    assert metrics["loss/entropy"] == pytest.approx(float((entropy * mask).sum() / mask.sum()), rel=1e-5)
