"""Measuring the sim-to-real gap: feature distances and task-metric gaps (``gap/<metric>``).

``compute_gap`` / ``embed_batches`` need torch and load it on first use only; ``write_report`` /
``Report`` (report.html of a run, :mod:`sim2real.gap.report`) load on first use too.
"""

from sim2real.gap.distances import (METRICS, coral_distance, feature_distances, frechet_distance, mmd,
                                    proxy_a_distance)
from sim2real.gap.naming import gap_metrics, metric_direction, sim_real_record
from sim2real.gap.tracker import FeatureGapTracker, GapTrackingConfig

__all__ = ["METRICS", "FeatureGapTracker", "GapTrackingConfig", "Report", "compute_gap", "coral_distance",
           "embed_batches", "feature_distances", "frechet_distance", "gap_metrics", "metric_direction", "mmd",
           "proxy_a_distance", "sim_real_record", "write_report"]


def __getattr__(name: str):
    if name in ("compute_gap", "embed_batches"):
        from sim2real.gap import compute

        return getattr(compute, name)
    if name in ("Report", "write_report"):
        from sim2real.gap import report

        return getattr(report, name)
    raise AttributeError(f"module 'sim2real.gap' has no attribute {name!r}")
