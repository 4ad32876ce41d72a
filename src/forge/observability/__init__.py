"""Observability: ``record_metric`` from any actor, per-step reduction and backends, timing, the run plot.

    from forge.observability import MetricLogger, MetricLoggerConfig, record_metric, timed, Timer, plot_run

See :mod:`forge.observability.metrics` for how records travel from actor processes to the controller.
"""

from forge.observability.logger import MetricLogger, MetricLoggerConfig
from forge.observability.metrics import (
    METRICS_DIR_ENV,
    REDUCTIONS,
    MetricCollector,
    drain_local,
    record_metric,
    reduce_records,
    set_metrics_dir,
)
from forge.observability.plot import plot_run, read_metrics
from forge.observability.timing import Timer, timed

__all__ = [
    "METRICS_DIR_ENV",
    "REDUCTIONS",
    "MetricCollector",
    "MetricLogger",
    "MetricLoggerConfig",
    "Timer",
    "drain_local",
    "plot_run",
    "read_metrics",
    "record_metric",
    "reduce_records",
    "set_metrics_dir",
    "timed",
]
