"""TitanTrainer and ReferenceModel through real Monarch processes (procs=1 and procs=2), as the seeds call them.

``await trainer.train_step.call(batch)`` and ``await trainer.push_weights.call(version)`` run on every rank of
the actor's mesh; the metrics are compared with the independent plain-PyTorch reference, the pushed weights are
read back from forge.store and must give the reference model's logits after the same step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "training"))
import plain

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _batch():
    from forge.types import TextTrainBatch

    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 256, (4, 17), generator=g)
    mask = torch.zeros(4, 16)
    for r in range(4):
        mask[r, 2 + r : 6 + 3 * r] = 1.0
    return TextTrainBatch(input_ids=ids[:, :-1], target_ids=ids[:, 1:], target_mask=mask)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    from forge.models.tiny import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(hidden_size=64, num_layers=2, intermediate_size=128)
    return str(build_tiny_model(tmp_path_factory.mktemp("actor_model"), spec))


@pytest.mark.parametrize("procs", [1, 2])
async def test_trainer_and_reference_actors(procs, model_dir, tmp_path):
    import forge.store as ws
    from forge.actors.reference_model import ReferenceModel
    from forge.actors.trainer import TitanTrainer

    ws.configure(str(tmp_path / "store"))  # before spawning: the trainer's processes inherit it
    batch = _batch()
    trainer = await TitanTrainer.options(procs=procs).as_actor(
        model={"path": model_dir}, optimizer={"lr": 1e-3},
        training={"micro_batch_size": 1, "max_norm": 1.0}, checkpoint={"folder": str(tmp_path / "ckpt")},
    )
    ref_actor = await ReferenceModel.options(procs=procs).as_actor(model={"path": model_dir})
    try:
        ref_lp = list((await ref_actor.forward.call(batch)).values())
        metrics = list((await trainer.train_step.call(batch)).values())
        pushed = await trainer.push_weights.call(1)
        saved = list((await trainer.save.call()).values())
        loaded = list((await trainer.load.call(1)).values())
        status = list((await trainer.get_status.call()).values())
    finally:
        await TitanTrainer.shutdown(trainer)
        await ReferenceModel.shutdown(ref_actor)

    ref = plain.load(model_dir)
    want_lp = plain.token_logprobs(ref, batch.input_ids, batch.target_ids).float()
    assert len(ref_lp) == procs
    for lp in ref_lp:
        torch.testing.assert_close(lp, want_lp, atol=1e-5, rtol=0)

    want_loss = plain.adamw_steps(ref, [(batch.input_ids, batch.target_ids, batch.target_mask)], 1e-3, 1.0)[0]
    timing = "trainer/tokens_per_s"  # each rank times itself; everything else is all-reduced
    same = [{k: v for k, v in m.items() if k != timing} for m in metrics]
    assert len(metrics) == procs and all(m == same[0] for m in same)  # identical on every rank
    assert metrics[0]["loss"] == pytest.approx(want_loss, rel=1e-5)
    assert {"trainer/grad_norm", "trainer/lr", "trainer/tokens_per_s"} <= set(metrics[0])
    assert [s["world_size"] for s in status] == [procs] * procs and status[0]["policy_version"] == 1
    assert len(list(pushed.values())) == procs
    assert saved == [str(tmp_path / "ckpt" / "step_1")] * procs
    assert loaded == [{"step": 1, "policy_version": 1}] * procs

    assert ws.latest_version() == 1
    state = await ws.get_state_dict(ws.policy_prefix(1))
    fresh = plain.load(model_dir)
    fresh.load_state_dict(state, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=batch.input_ids).logits, ref(input_ids=batch.input_ids).logits,
                                   atol=2e-5, rtol=0)
