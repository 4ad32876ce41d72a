"""record_metric from real Monarch actor processes reaches the controller's MetricLogger, reduced per step."""

from __future__ import annotations

import json

import pytest
from monarch.actor import endpoint

from forge.controller.actor import ForgeActor
from forge.observability import MetricLogger, MetricLoggerConfig, record_metric

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class Recorder(ForgeActor):
    """Records the values it is given (as an engine inside an actor would)."""

    @endpoint
    async def record(self, values: list[float]) -> int:
        import os

        for v in values:
            record_metric("test/value", v, "mean")
            record_metric("test/count", 1, "sum")
        return os.getpid()


async def test_metrics_from_two_actor_processes_are_reduced_per_step(tmp_path):
    logger = MetricLogger(MetricLoggerConfig(backends=("jsonl",)), tmp_path / "run", total_steps=2)
    actor = await Recorder.options(procs=2).as_actor()  # spawned after the logger: inherits FORGE_METRICS_DIR
    try:
        pids = await actor.record.call([1.0, 2.0])  # each of the 2 ranks records 1, 2
        assert len(set(pids.values())) == 2  # two separate processes recorded
        row1 = logger.log_step(1)
        await actor.record.call([10.0])
        record_metric("test/value", 30.0)  # the controller itself records too
        row2 = logger.log_step(2)
    finally:
        await Recorder.shutdown(actor)
        logger.close()
    assert row1["test/value"] == pytest.approx(1.5) and row1["test/count"] == 4.0
    assert row2["test/value"] == pytest.approx((10 + 10 + 30) / 3) and row2["test/count"] == 2.0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
