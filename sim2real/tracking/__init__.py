"""Run tracking: local metrics.jsonl always, Weights & Biases when enabled (offline by default)."""

from sim2real.tracking.logger import RunLogger
from sim2real.tracking.wandb_sink import (OfflineRun, TrackingConfig, WandbSink, find_offline_runs, make_logger,
                                          read_offline_run)
from sim2real.tracking.report import Report, write_report

__all__ = ["OfflineRun", "RunLogger", "Report", "TrackingConfig", "WandbSink", "find_offline_runs", "make_logger",
           "read_offline_run", "write_report"]
