"""record_metric → per-step reduction (hand-computed), across processes, and the logger backends."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest
import torch

from forge.observability import (
    METRICS_DIR_ENV,
    MetricCollector,
    MetricLogger,
    MetricLoggerConfig,
    Timer,
    drain_local,
    plot_run,
    record_metric,
    reduce_records,
    timed,
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)
    drain_local()
    yield
    drain_local()


def rec(k, v, r, t):
    return {"k": k, "v": v, "r": r, "t": t}


def test_reductions_hand_computed():
    vals = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]  # mean 5, population std 2 (the textbook example)
    records = []
    for how in ("mean", "sum", "max", "min", "std", "last"):
        # timestamps out of order: "last" must pick the largest time (value 7.0 at t=100)
        times = [1, 2, 3, 4, 5, 6, 100, 7]
        records += [rec(f"m/{how}", v, how, t) for v, t in zip(vals, times)]
    out = reduce_records(records)
    assert out == {"m/mean": 5.0, "m/sum": 40.0, "m/max": 9.0, "m/min": 2.0, "m/std": 2.0, "m/last": 7.0}


def test_record_metric_local_buffer_and_value_types():
    record_metric("a/x", torch.tensor(1.5))
    record_metric("a/x", 2, "mean")
    record_metric("a/flag", True, "sum")
    out = reduce_records(drain_local())
    assert out == {"a/x": 1.75, "a/flag": 1.0}
    with pytest.raises(ValueError, match="unknown reduce='median'"):
        record_metric("a/y", 1.0, "median")
    record_metric("a/x", 1.0, "mean")
    record_metric("a/x", 3.0, "sum")
    with pytest.warns(UserWarning, match="recorded with reduce='mean' and 'sum'; using 'mean'"):
        assert reduce_records(drain_local()) == {"a/x": 2.0}
    with pytest.raises(TypeError, match="value must be a number"):
        record_metric("a/z", "high")
    with pytest.raises(TypeError, match="one number"):
        record_metric("a/z", torch.ones(3))


def _child(metrics_dir: str, rank: int) -> None:
    os.environ[METRICS_DIR_ENV] = metrics_dir
    for v in range(rank * 10, rank * 10 + 3):  # rank 0: 0,1,2  rank 1: 10,11,12
        record_metric("loss/value", float(v), "mean")
        record_metric("gen/tokens", float(v), "sum")


def test_records_from_other_processes_reach_the_collector(tmp_path):
    collector = MetricCollector(tmp_path / "m")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(str(tmp_path / "m"), r)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    out = reduce_records(collector.collect())
    assert out["loss/value"] == pytest.approx((0 + 1 + 2 + 10 + 11 + 12) / 6)
    assert out["gen/tokens"] == 36.0
    assert collector.collect() == []  # consumed once


def test_collector_ignores_a_partial_line(tmp_path):
    d = tmp_path / "m"
    collector = MetricCollector(d)
    f = d / "h-1.jsonl"
    f.write_text(json.dumps(rec("a", 1.0, "sum", 1.0)) + "\n" + '{"k": "a", "v": 2')
    assert reduce_records(collector.collect()) == {"a": 1.0}
    with open(f, "a") as fh:
        fh.write(', "r": "sum", "t": 2.0}\n')
    assert reduce_records(collector.collect()) == {"a": 2.0}


def test_logger_steps_jsonl_tensorboard_and_plot(tmp_path, capsys):
    cfg = MetricLoggerConfig(backends=("console", "jsonl", "tensorboard"), progress_bar=False)
    with MetricLogger(cfg, tmp_path / "run", total_steps=3) as logger:
        assert os.environ[METRICS_DIR_ENV] == str((tmp_path / "run" / "metrics").resolve())
        for step in (1, 2, 3):
            for v in (step, 3 * step):
                record_metric("reward/mean", v)
            record_metric("loss/kl", 0.1 * step, "last")
            record_metric("time/step", 0.5, "max")
            row = logger.log_step(step, {"eval/accuracy": 0.2 * step if step != 2 else None})
            assert row["reward/mean"] == 2 * step
    assert METRICS_DIR_ENV not in os.environ  # close() restores the process's previous destination
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward/mean"] for r in rows] == [2.0, 4.0, 6.0]
    assert [r.get("eval/accuracy") for r in rows] == [0.2, None, pytest.approx(0.6)]
    out = capsys.readouterr().out
    assert "step 2/3 | loss/kl=0.2 | rew/mean=4 | t/step=0.5" in out
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "tensorboard wrote no event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(1, 2.0), (2, 4.0), (3, 6.0)]
    png = plot_run(tmp_path / "run" / "metrics.jsonl", tmp_path / "run" / "plot.png")
    assert png.stat().st_size > 10_000
    from PIL import Image

    assert Image.open(png).size[0] > 500


def test_wandb_backend_is_optional(tmp_path):
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install wandb"):
            MetricLogger(MetricLoggerConfig(backends=("wandb",)), tmp_path)
    else:
        with MetricLogger(MetricLoggerConfig(backends=("wandb",), wandb_mode="offline"), tmp_path) as lg:
            record_metric("x/y", 1.0)
            assert lg.log_step(1)["x/y"] == 1.0
    with pytest.raises(ValueError, match="unknown metric backend"):
        MetricLoggerConfig(backends=("stdout",))


def test_timer_breakdown(monkeypatch):
    from forge.observability import timing

    clock = iter([0.0, 1.0, 3.0, 3.5, 4.0, 10.0])  # start, train 1→3, sync 3.5→4, lap at 10
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    t = Timer()
    with t.section("train"):
        pass
    with t.section("weight_sync"):
        pass
    out = t.lap()
    assert out == {"time/train": 2.0, "time/weight_sync": 0.5, "time/step": 10.0, "time/idle": 7.5}
    assert reduce_records(drain_local()) == out


def test_timed_records_even_on_error():
    with pytest.raises(RuntimeError), timed("generate"):
        raise RuntimeError("boom")
    out = reduce_records(drain_local())
    assert set(out) == {"time/generate"} and 0 <= out["time/generate"] < 1.0


def test_plot_panels_pick_the_documented_keys(tmp_path):
    from forge.observability.plot import DEFAULT_PANELS, _pick_key

    rows = [{"step": 1, "reward/total": 0.1, "reward/mean": 0.2, "loss/kl": 0.01, "generator/entropy": 1.5,
             "eval/pass@4": 0.9, "time/step": 0.3}]
    picked = [_pick_key(rows, cands) for _, cands in DEFAULT_PANELS]
    assert picked == ["reward/mean", "eval/pass@4", "loss/kl", "generator/entropy", "time/step"]
    with pytest.raises(ValueError, match="no metric rows"):
        (tmp_path / "empty.jsonl").write_text("")
        plot_run(tmp_path / "empty.jsonl", tmp_path / "x.png")
