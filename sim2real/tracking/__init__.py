"""Run tracking, a pure sink: local metrics.jsonl always, Weights & Biases when enabled (offline by default).

The run report (report.html) is the gap's: :mod:`sim2real.gap.report`.
"""

from sim2real.tracking.logger import RunLogger
from sim2real.tracking.wandb_sink import (OfflineRun, TrackingConfig, WandbSink, find_offline_runs, make_logger,
                                          read_offline_run)

__all__ = ["OfflineRun", "RunLogger", "TrackingConfig", "WandbSink", "find_offline_runs", "make_logger",
           "read_offline_run"]
