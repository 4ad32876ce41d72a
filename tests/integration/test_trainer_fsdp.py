"""The FSDP2 trainer on real multi-process gloo groups: 2 ranks == 1 rank, exact resume, export, reference.

Each world size runs one worker script in real processes (torch.multiprocessing spawn, env:// rendezvous as
torchrun or a ForgeActor would set it). The test then compares the worlds with each other and with an
independent plain-PyTorch reference (tests/unit/training/plain.py).

Tolerances: 2 ranks vs 1 rank differ only in the order of floating-point sums (the reduce-scatter adds two rank
shares instead of one), so losses agree to rel 1e-5 and parameters after 3 AdamW steps to atol 2e-5 (lr 1e-3:
one step moves a weight by ~1e-3). Resume is compared bit for bit within a world.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "training"))
import plain

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def _batches():
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(4):
        ids = torch.randint(0, 256, (4, 17), generator=g)
        mask = torch.zeros(4, 16)
        for r in range(4):
            mask[r, : 3 + 4 * r] = 1.0
        out.append((ids[:, :-1], ids[:, 1:], mask))
    return out


def _worker(rank: int, world: int, port: int, model: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from forge.engines.training import ReferenceConfig, ReferenceEngine, TrainerConfig, TrainingEngine
    from forge.types import RLBatch, TextTrainBatch

    tree = {"model": {"path": model}, "optimizer": {"lr": 1e-3},
            "training": {"micro_batch_size": 1, "max_norm": 1.0},
            "checkpoint": {"folder": f"{out}/ckpt_w{world}"}}
    batches = [TextTrainBatch(i, t, m) for i, t, m in _batches()]
    a = TrainingEngine(TrainerConfig.from_dict(tree))
    a.setup()
    losses = [a.train_step(b)["loss"] for b in batches[:2]]
    a.save(2)
    losses += [a.train_step(b)["loss"] for b in batches[2:]]
    final = {n: p.full_tensor().detach().clone() for n, p in a.model.named_parameters()}
    with torch.no_grad():
        logits = a.model(input_ids=batches[0].input_ids).logits
    a.export(f"{out}/hf_w{world}")

    b = TrainingEngine(TrainerConfig.from_dict(tree))
    b.setup()
    b.load(2)
    resumed = [b.train_step(x)["loss"] for x in batches[2:]]
    exact = resumed == losses[2:] and all(
        torch.equal(p.full_tensor(), final[n]) for n, p in b.model.named_parameters())

    resharded = None
    if world == 2:  # resume the 1-rank checkpoint on 2 ranks: DCP reshards model and optimizer state
        d = TrainingEngine(TrainerConfig.from_dict(tree))
        d.setup()
        d.load(f"{out}/ckpt_w1/step_2")
        for x in batches[2:]:
            d.train_step(x)
        resharded = {n: p.full_tensor().detach().clone() for n, p in d.model.named_parameters()}

    try:  # a batch the ranks cannot split evenly must fail loudly on every rank, before any collective
        a.forward_backward(TextTrainBatch(*(t[:3] for t in (batches[0].input_ids, batches[0].target_ids,
                                                             batches[0].target_mask))))
        uneven_error = ""
    except ValueError as e:
        uneven_error = str(e)

    rl = RLBatch(input_ids=batches[0].input_ids, target_ids=batches[0].target_ids, loss_mask=batches[0].target_mask,
                 advantages=torch.tensor([1.0, -0.5, 0.25, 2.0]), generator_logprobs=-5.5 * batches[0].target_mask)
    c = TrainingEngine(TrainerConfig.from_dict({**tree, "loss": {"name": "grpo", "kwargs": {}}}))
    c.setup()
    rl_res = c.forward_backward(rl)
    rl_grad = {n: p.grad.full_tensor() for n, p in c.model.named_parameters()}

    ref = ReferenceEngine(ReferenceConfig.from_dict({"model": {"path": model}, "max_tokens_per_forward": 32}))
    ref.setup()
    five = torch.cat([batches[1].input_ids, batches[2].input_ids[:1]]), torch.cat(
        [batches[1].target_ids, batches[2].target_ids[:1]])
    ref_lp = ref.logprobs(*five)  # 5 rows over W ranks: exercises the padding path
    if rank == 0:
        torch.save({"losses": losses, "final": final, "logits": logits, "exact": exact, "rl_loss": rl_res.loss,
                    "rl_metrics": rl_res.metrics, "uneven_error": uneven_error, "resharded": resharded, "rl_grad": rl_grad, "ref_lp": ref_lp, "five": five},
                   f"{out}/result_w{world}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from forge.models.tiny import TinyModelSpec, build_tiny_model

    out = tmp_path_factory.mktemp("fsdp")
    model = str(build_tiny_model(out / "model", TinyModelSpec(hidden_size=64, num_layers=2, intermediate_size=128)))
    res = {}
    for world in (1, 2):
        mp.start_processes(_worker, args=(world, _free_port(), model, str(out)), nprocs=world, start_method="spawn")
        res[world] = torch.load(out / f"result_w{world}.pt", weights_only=False)
    return model, out, res


def test_two_ranks_match_one_rank(results):
    _, _, res = results
    assert res[2]["losses"] == pytest.approx(res[1]["losses"], rel=1e-5)
    for name, p in res[1]["final"].items():
        torch.testing.assert_close(res[2]["final"][name], p, atol=2e-5, rtol=0, msg=name)
    assert res[2]["rl_loss"] == pytest.approx(res[1]["rl_loss"], rel=1e-5)
    assert res[2]["rl_metrics"]["loss/num_tokens"] == res[1]["rl_metrics"]["loss/num_tokens"] == 36.0  # 3 + 7 + 11 + 15
    for name, g in res[1]["rl_grad"].items():
        torch.testing.assert_close(res[2]["rl_grad"][name], g, atol=1e-6, rtol=1e-4, msg=name)


def test_one_rank_checkpoint_resumes_on_two_ranks(results):
    _, _, res = results
    for name, p in res[1]["final"].items():
        torch.testing.assert_close(res[2]["resharded"][name], p, atol=2e-5, rtol=0, msg=name)


def test_uneven_batch_is_rejected_with_a_clear_error(results):
    _, _, res = results
    assert res[1]["uneven_error"] == ""
    assert "3 rows, not divisible by the trainer's 2 data-parallel ranks" in res[2]["uneven_error"]


def test_one_rank_matches_plain_reference(results):
    model, _, res = results
    ref = plain.load(model)
    want = plain.adamw_steps(ref, _batches(), lr=1e-3, max_norm=1.0)
    assert res[1]["losses"] == pytest.approx(want, rel=1e-5)


def test_resume_is_bit_exact_on_every_world(results):
    _, _, res = results
    assert res[1]["exact"] and res[2]["exact"]


def test_export_from_two_ranks_reloads_to_identical_logits(results):
    from transformers import AutoModelForCausalLM

    _, out, res = results
    for world in (1, 2):
        fresh = AutoModelForCausalLM.from_pretrained(out / f"hf_w{world}")
        with torch.no_grad():
            logits = fresh(input_ids=_batches()[0][0]).logits
        assert torch.equal(logits, res[world]["logits"]), world


def test_reference_logprobs_match_initial_weights(results):
    model, _, res = results
    ids, tgt = res[1]["five"]
    want = plain.token_logprobs(plain.load(model), ids, tgt).float()
    for world in (1, 2):
        assert res[world]["ref_lp"].shape == (5, 16)
        torch.testing.assert_close(res[world]["ref_lp"], want, atol=1e-5, rtol=0)
