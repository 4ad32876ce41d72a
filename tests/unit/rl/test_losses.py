"""Every loss × every aggregation against references written here, straight from the papers, as naive loops.

The references share no code with forge.rl.loss: scalars per (row, token), python ``min``/``max`` on tensors,
sums in loops. Values and autograd gradients are compared in float64 on ragged inputs with an all-masked row,
a multi-turn mask with holes, a group of one and a zero-variance group (advantage 0), and ratios far from 1.
"""

import math

import pytest
import torch

from forge.rl.loss import LOSSES, LossInput, build_loss

AGGS = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "fixed_horizon"]
HORIZON = 9
B, T = 8, 6

# (registry name, options) — each is checked under every aggregation, with and without TIS.
CASES = [
    ("grpo", {}),
    ("grpo", {"beta": 0.1, "kl_type": "k3"}),
    ("grpo", {"beta": 0.3, "kl_type": "k1"}),
    ("grpo", {"beta": 0.2, "kl_type": "k2", "clip_low": 0.1, "clip_high": 0.4}),
    ("dapo", {}),
    ("cispo", {}),
    ("cispo", {"clip_low": 0.2, "clip_high": 0.5}),
    ("gspo", {}),
    ("gspo", {"clip_low": 0.15, "clip_high": 0.25}),
    ("gspo", {"level": "token", "clip_low": 0.15, "clip_high": 0.25}),
    ("sapo", {}),
    ("sapo", {"tau_pos": 0.5, "tau_neg": 2.0}),
]
DEFAULTS = {
    "grpo": {"clip_low": 0.2, "clip_high": 0.2, "beta": 0.0, "kl_type": "k3"},
    "dapo": {"clip_low": 0.2, "clip_high": 0.28},
    "cispo": {"clip_low": None, "clip_high": 4.0},
    "gspo": {"clip_low": 3e-4, "clip_high": 4e-4, "level": "sequence"},
    "sapo": {"tau_pos": 1.0, "tau_neg": 1.05},
}


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------
def make_inputs(seed: int, per_token_advantages: bool = False, on_policy: bool = False):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T, dtype=torch.float64)
    mask[0, :] = 1  # full row
    mask[1, :3] = 1  # short row
    # row 2 stays all-masked
    mask[3] = torch.tensor([1, 0, 1, 1, 0, 1.0])  # multi-turn: tool tokens in between
    for i in range(4, B):
        mask[i, : int(torch.randint(1, T + 1, (1,), generator=g))] = 1
    # Groups (rows): {0, 1, 2}, {3} (group of one), {4, 5}, {6, 7} (zero variance: equal rewards).
    groups = [[0, 1, 2], [3], [4, 5], [6, 7]]
    rewards = torch.rand(B, generator=g, dtype=torch.float64)
    rewards[6] = rewards[7] = 0.5
    adv = torch.zeros(B, dtype=torch.float64)
    for rows in groups:
        rs = [float(rewards[i]) for i in rows]
        if len(rs) < 2:
            continue
        mean = sum(rs) / len(rs)
        std = math.sqrt(sum((x - mean) ** 2 for x in rs) / (len(rs) - 1))
        for i in rows:
            adv[i] = (float(rewards[i]) - mean) / (std + 1e-6)
    if per_token_advantages:
        adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    logp = (-0.05 - 4 * torch.rand(B, T, generator=g, dtype=torch.float64)).requires_grad_(True)
    noise = 0.8 * torch.randn(B, T, generator=g, dtype=torch.float64)  # ratios from ~e^-2.4 to ~e^2.4
    gen = logp.detach() + (0 if on_policy else noise)
    if not on_policy:
        gen[1] = logp.detach()[1]  # one row exactly on-policy
    gen = torch.where(mask > 0, gen, torch.full_like(gen, 37.0))  # garbage where masked: must never count
    ref = logp.detach() + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    old = logp.detach() + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    return {"logp": logp, "gen": gen, "ref": ref, "old": old, "adv": adv, "mask": mask}


# ----------------------------------------------------------------------------------------------------------
# References (independent of forge.rl.loss)
# ----------------------------------------------------------------------------------------------------------
def ref_clip(x, low, high):
    if low is not None and x < low:
        x = x * 0 + low  # a constant: the clipped branch has no gradient
    if high is not None and x > high:
        x = x * 0 + high
    return x


def ref_adv(adv, i, t):
    return adv[i, t] if adv.dim() == 2 else adv[i]


def ref_token_losses(name, cfg, x, tis_cap):
    """{(i, t): ℓ_it} for every trained token, from the papers' formulas."""
    logp, gen, mask, adv = x["logp"], x["gen"], x["mask"], x["adv"]
    use_old = tis_cap is not None
    behaviour = x["old"] if use_old else gen
    out = {}
    rows = range(mask.shape[0])
    if name == "gspo":  # sequence ratio s_i = exp(mean_t (logp - behaviour))
        for i in rows:
            ts = [t for t in range(T) if mask[i, t] > 0]
            if not ts:
                continue
            log_s = sum(logp[i, t] - behaviour[i, t] for t in ts) / len(ts)
            low, high = 1 - cfg["clip_low"], 1 + cfg["clip_high"]
            if cfg["level"] == "sequence":
                a = sum(ref_adv(adv, i, t) for t in ts) / len(ts)
                s = torch.exp(log_s)
                row_loss = -torch.minimum(s * a, ref_clip(s, low, high) * a)
                for t in ts:
                    out[(i, t)] = row_loss
            else:  # GSPO-token, eq. 13: s_it = sg(s_i) * pi(o_it) / sg(pi(o_it))
                for t in ts:
                    s_it = torch.exp(log_s.detach() + logp[i, t] - logp[i, t].detach())
                    a = ref_adv(adv, i, t)
                    out[(i, t)] = -torch.minimum(s_it * a, ref_clip(s_it, low, high) * a)
    else:
        for i in rows:
            for t in range(T):
                if mask[i, t] == 0:
                    continue
                a = ref_adv(adv, i, t)
                r = torch.exp(logp[i, t] - behaviour[i, t])
                if name in ("grpo", "dapo"):
                    low, high = 1 - cfg["clip_low"], 1 + cfg["clip_high"]
                    loss = -torch.minimum(r * a, ref_clip(r, low, high) * a)
                    if cfg.get("beta", 0.0) > 0:
                        d = logp[i, t] - x["ref"][i, t]
                        kl = {"k1": d, "k2": 0.5 * d**2, "k3": torch.exp(-d) + d - 1}[cfg["kl_type"]]
                        loss = loss + cfg["beta"] * kl
                elif name == "cispo":
                    low = None if cfg["clip_low"] is None else 1 - cfg["clip_low"]
                    high = None if cfg["clip_high"] is None else 1 + cfg["clip_high"]
                    w = ref_clip(r.detach(), low, high)
                    loss = -w * a * logp[i, t]
                elif name == "sapo":
                    tau = cfg["tau_pos"] if a > 0 else cfg["tau_neg"]
                    loss = -torch.sigmoid(tau * (r - 1)) * 4 / tau * a
                out[(i, t)] = loss
    if use_old:
        for (i, t), loss in out.items():
            w = min(math.exp(float(x["old"][i, t] - gen[i, t])), tis_cap)
            out[(i, t)] = loss * w
    return out


def ref_aggregate(tok, mask, mode, normalizer=None):
    lengths = [int(mask[i].sum()) for i in range(mask.shape[0])]
    nonempty = [i for i in range(mask.shape[0]) if lengths[i] > 0]
    zero = torch.zeros((), dtype=torch.float64)
    row_sum = {i: sum((tok[(i, t)] for t in range(T) if (i, t) in tok), zero) for i in nonempty}
    if mode == "token-mean":
        num, den = sum(row_sum.values(), zero), sum(lengths)
    elif mode == "seq-mean-token-sum":
        num, den = sum(row_sum.values(), zero), len(nonempty)
    elif mode == "seq-mean-token-mean":
        num, den = sum((row_sum[i] / lengths[i] for i in nonempty), zero), len(nonempty)
    else:
        num, den = sum(row_sum.values(), zero), mask.shape[0] * HORIZON
    den = den if normalizer is None else normalizer
    return num / den if den else num


def ref_loss(name, options, agg, x, tis_cap=None, normalizer=None):
    cfg = {**DEFAULTS[name.replace("dr_", "")], **options}
    return ref_aggregate(ref_token_losses(name, cfg, x, tis_cap), x["mask"], agg, normalizer)


def forge_loss(name, options, agg, x, tis_cap=None, normalizer=None):
    loss_fn = build_loss(name, agg_type=agg, horizon=HORIZON, tis_cap=tis_cap, **options)
    inp = LossInput(
        trainer_logprobs=x["logp"],
        generator_logprobs=x["gen"],
        advantages=x["adv"],
        loss_mask=x["mask"],
        ref_logprobs=x["ref"],
        old_logprobs=x["old"] if tis_cap is not None else None,
    )
    return loss_fn.from_logprobs(inp, normalizer=normalizer)


def grad(loss, leaf):
    return torch.autograd.grad(loss, leaf, allow_unused=True)[0]


# ----------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tis_cap", [None, 1.5])
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_loss_matches_paper_reference_in_value_and_gradient(name, options, agg, tis_cap):
    for seed, per_token in ((0, False), (1, False), (2, True)):
        if name == "gspo" and options.get("level", "sequence") == "sequence" and per_token:
            continue  # sequence-level GSPO takes one advantage per sequence
        x = make_inputs(seed, per_token_advantages=per_token)
        got, metrics = forge_loss(name, options, agg, x, tis_cap)
        want = ref_loss(name, options, agg, x, tis_cap)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad(got, x["logp"]), grad(want, x["logp"]), rtol=1e-9, atol=1e-12)
        assert metrics["loss/total"] == pytest.approx(float(want.detach()), rel=1e-9, abs=1e-12)
        assert metrics["loss/num_tokens"] == float(x["mask"].sum())
        if name in ("grpo", "dapo") or (name == "cispo" and options):
            assert metrics["loss/clip_frac"] > 0  # the inputs do exercise the clipped branch


def test_dr_grpo_is_grpo_with_the_fixed_horizon():
    x = make_inputs(3)
    got, _ = build_loss("dr_grpo", horizon=HORIZON).from_logprobs(
        LossInput(x["logp"], x["gen"], x["adv"], x["mask"])
    )
    want = ref_loss("grpo", {}, "fixed_horizon", x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad(got, x["logp"]), grad(want, x["logp"]))


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_four_micro_batches_with_global_normalizer_equal_one_batch(name, options, agg):
    x = make_inputs(4)
    loss_fn = build_loss(name, agg_type=agg, horizon=HORIZON, **options)
    big, _ = forge_loss(name, options, agg, x)
    big_grad = grad(big, x["logp"])
    slices = [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    total_norm = sum(loss_fn.normalizer(x["mask"][s]) for s in slices)
    assert total_norm == loss_fn.normalizer(x["mask"])
    summed_loss, summed_grad = 0.0, torch.zeros_like(x["logp"])
    for s in slices:
        inp = LossInput(x["logp"][s], x["gen"][s], x["adv"][s], x["mask"][s], ref_logprobs=x["ref"][s])
        loss, _ = loss_fn.from_logprobs(inp, normalizer=total_norm)
        summed_loss = summed_loss + loss.detach()
        summed_grad += grad(loss, x["logp"])
    torch.testing.assert_close(summed_loss, big.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(summed_grad, big_grad, rtol=1e-10, atol=1e-12)


def reinforce_grad(x, agg):
    """Gradient of aggregate(−A · logp): plain policy gradient, the on-policy limit of every loss here."""
    tok = {}
    for i in range(B):
        for t in range(T):
            if x["mask"][i, t] > 0:
                tok[(i, t)] = -ref_adv(x["adv"], i, t) * x["logp"][i, t]
    return grad(ref_aggregate(tok, x["mask"], agg), x["logp"])


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name", ["grpo", "dapo", "cispo", "sapo"])
def test_on_policy_gradient_is_reinforce(name, agg):
    """r = 1: the GRPO/DAPO clip is inactive, the SAPO gate weight is exactly 1, CISPO is REINFORCE."""
    x = make_inputs(5, on_policy=True)
    loss, metrics = forge_loss(name, {}, agg, x)
    torch.testing.assert_close(grad(loss, x["logp"]), reinforce_grad(x, agg), rtol=1e-12, atol=1e-14)
    assert metrics["loss/ratio_mean"] == 1.0
    if name in ("grpo", "dapo"):
        assert metrics["loss/clip_frac"] == 0.0
        value_at_r1 = {(i, t): -x["adv"][i] for i in range(B) for t in range(T) if x["mask"][i, t]}  # −r·A
        assert float(loss.detach()) == pytest.approx(
            float(ref_aggregate(value_at_r1, x["mask"], agg)), abs=1e-12
        )
    if name == "sapo":
        assert metrics["loss/gate_weight_mean"] == 1.0


@pytest.mark.parametrize("clip", [(3e-4, 4e-4), (0.15, 0.25), (1.0, 5.0)])
def test_gspo_token_level_equals_sequence_level_for_sequence_advantages(clip):
    x = make_inputs(6)
    opts = {"clip_low": clip[0], "clip_high": clip[1]}
    seq, seq_m = forge_loss("gspo", {**opts, "level": "sequence"}, "seq-mean-token-mean", x)
    tok, tok_m = forge_loss("gspo", {**opts, "level": "token"}, "seq-mean-token-mean", x)
    torch.testing.assert_close(tok, seq, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad(tok, x["logp"]), grad(seq, x["logp"]), rtol=1e-10, atol=1e-14)
    # ... and the same holds when the per-sequence advantage is given as a [B, T] tensor.
    x["adv"] = x["adv"].unsqueeze(1).expand(B, T).clone()
    tok2, _ = forge_loss("gspo", {**opts, "level": "token"}, "seq-mean-token-mean", x)
    torch.testing.assert_close(tok2, seq, rtol=1e-12, atol=1e-14)


def test_dapo_hand_computed_value_and_clip_fractions():
    # r = 0.5, 1.5 with A = +1; r = 1.1, 0.7 with A = -1; clip [0.8, 1.28].
    ratios = torch.tensor([[0.5, 1.5, 1.1, 0.7]], dtype=torch.float64)
    logp = ratios.log().requires_grad_(True)
    inp = LossInput(
        logp, torch.zeros(1, 4, dtype=torch.float64), torch.tensor([[1.0, 1, -1, -1]]), torch.ones(1, 4)
    )
    loss, m = build_loss("dapo").from_logprobs(inp)
    # tokens: -min(.5,.5) = -.5; -min(1.5,1.28) = -1.28; -min(-1.1,-1.1) = 1.1; -min(-.7,-.8) = .8
    assert loss.item() == pytest.approx((-0.5 - 1.28 + 1.1 + 0.8) / 4)
    assert (m["loss/clip_frac"], m["loss/clip_frac_high"], m["loss/clip_frac_low"]) == (0.5, 0.25, 0.25)
    # d/dlogp of -r*A/4 where unclipped: [-0.5/4, 0, 1.1/4, 0]
    torch.testing.assert_close(
        grad(loss, logp), torch.tensor([[-0.125, 0.0, 0.275, 0.0]], dtype=torch.float64)
    )


def test_loss_from_logits_equals_loss_from_logprobs():
    torch.manual_seed(7)
    logits = torch.randn(3, 4, 13, dtype=torch.float64, requires_grad=True)
    target_ids = torch.randint(0, 13, (3, 4))
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.float64)
    gen = -torch.rand(3, 4, dtype=torch.float64) * 3
    adv = torch.tensor([0.7, -0.2, -1.1], dtype=torch.float64)
    for name in sorted(LOSSES):
        loss_fn = build_loss(name, horizon=5) if name == "dr_grpo" else build_loss(name)
        got, metrics = loss_fn(
            logits=logits,
            target_ids=target_ids,
            advantages=adv,
            generator_logprobs=gen,
            loss_mask=mask,
            temperature=0.9,
        )
        logp = torch.log_softmax(logits / 0.9, -1).gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
        want, _ = loss_fn.from_logprobs(LossInput(logp, gen, adv, mask))
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(grad(got, logits), grad(want, logits))
        p = torch.softmax(logits.detach() / 0.9, -1)
        entropy = -(p * p.log()).sum(-1)
        assert metrics["loss/entropy"] == pytest.approx(float((entropy * mask).sum() / mask.sum()))
        # KL(trainer ‖ generator) by hand: k3 = exp(gen - logp) - (gen - logp) - 1, mean over trained tokens
        r = (gen - logp.detach())[mask.bool()]
        assert metrics["loss/kl_generator"] == pytest.approx(float((r.exp() - r - 1).mean()))


def test_kl_metric_and_errors():
    x = make_inputs(8)
    _, m = forge_loss("grpo", {}, "token-mean", x)
    d = (x["logp"].detach() - x["ref"]) * x["mask"]
    k3 = (torch.exp(-d) + d - 1) * x["mask"]
    assert m["loss/kl"] == pytest.approx(float(k3.sum() / x["mask"].sum()))
    inp = LossInput(x["logp"], x["gen"], x["adv"], x["mask"])
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        build_loss("grpo", beta=0.1).from_logprobs(inp)
    with pytest.raises(ValueError, match=r"advantages must be \[B\] = \(8,\)"):
        build_loss("dapo").from_logprobs(LossInput(x["logp"], x["gen"], x["adv"][:3], x["mask"]))
    with pytest.raises(ValueError, match="generator_logprobs must be"):
        build_loss("dapo").from_logprobs(LossInput(x["logp"], x["gen"][:, :2], x["adv"], x["mask"]))
    with pytest.raises(ValueError, match="valid names: cispo, dapo, dr_grpo, grpo, gspo, sapo"):
        build_loss("ppo")
    with pytest.raises(TypeError, match="its options are"):
        build_loss("sapo", clip_low=0.1)
    with pytest.raises(ValueError, match="needs horizon > 0"):
        build_loss("dr_grpo")
    with pytest.raises(ValueError, match="valid: sequence, token"):
        build_loss("gspo", level="group")
    with pytest.raises(ValueError, match="unknown agg_type"):
        build_loss("grpo", agg_type="mean")


def test_a_new_loss_written_like_the_built_in_ones():
    """The extension path of forge/rl/loss/__init__.py: a frozen dataclass + token_loss, nothing else."""
    from dataclasses import dataclass

    from forge.rl.loss import PolicyLoss

    @dataclass(frozen=True, kw_only=True)
    class ReinforceLoss(PolicyLoss):
        agg_type: str = "token-mean"
        horizon: int | None = None
        tis_cap: float | None = None

        def token_loss(self, inp, advantages, behaviour_logprobs):
            return -advantages * inp.trainer_logprobs, {}

    x = make_inputs(9)
    loss, metrics = ReinforceLoss().from_logprobs(LossInput(x["logp"], x["gen"], x["adv"], x["mask"]))
    want = ref_aggregate(
        {(i, t): -x["adv"][i] * x["logp"][i, t] for i in range(B) for t in range(T) if x["mask"][i, t]},
        x["mask"],
        "token-mean",
    )
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(grad(loss, x["logp"]), reinforce_grad(x, "token-mean"))
    assert metrics["loss/total"] == pytest.approx(float(want.detach()))
