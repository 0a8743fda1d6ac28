"""Per-epoch feature-gap tracking for trainers: cheap by default, every metric on request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sim2real.config import ConfigError, rng
from sim2real.gap.distances import METRICS, feature_distances
from sim2real.gap.naming import FEATURE_PREFIX


@dataclass
class GapTrackingConfig:
    """How often and on how many samples the trainer measures the feature gap.

    Defaults keep the per-epoch overhead under ~10% of a cached-feature head epoch (see
    ``bench/bench_gap_tracking.py``): 128 samples per domain (the same rows every epoch, so curves
    are comparable), MMD / CORAL / Fréchet every epoch, the proxy A-distance (a classifier fit) at
    epochs 0, 5, 10, ...; the ``final=True`` call measures everything on up to
    ``final_max_samples`` per domain for the run's summary. Values depend on the sample size
    (Fréchet most), so compare per-epoch values with each other and final values with final ones.
    """

    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    max_samples: int = field(default=128, metadata=rng(4, None))
    final_max_samples: int = field(default=1024, metadata=rng(4, None))
    every: int = field(default=1, metadata=rng(1, None))
    pad_every: int = field(default=5, metadata=rng(1, None))
    seed: int = 0

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ConfigError("metrics", f"a list drawn from {list(METRICS)}", unknown)


class FeatureGapTracker:
    """Call once per epoch with sim and real embeddings; returns ``gap/feat_*`` (maybe empty).

    Example::

        tracker = FeatureGapTracker(GapTrackingConfig())
        logger.log({"epoch": e, **tracker(sim_feats, real_feats, epoch=e)}, step=step)
        logger.summary(tracker(sim_feats, real_feats, epoch=e, final=True))
    """

    def __init__(self, cfg: GapTrackingConfig | None = None):
        self.cfg = cfg or GapTrackingConfig()
        self.cfg.validate()
        self.last_seconds = 0.0

    def due(self, epoch: int, final: bool = False) -> list[str]:
        """Metrics to compute at ``epoch`` (0-based)."""
        if final:
            return list(self.cfg.metrics)
        # Epoch 0 measures everything: the "before training/adaptation" baseline.
        if epoch % self.cfg.every:
            return []
        return [m for m in self.cfg.metrics if m != "pad" or epoch % self.cfg.pad_every == 0]

    def __call__(self, sim_feats: Any, real_feats: Any, epoch: int = 0, final: bool = False) -> dict[str, float]:
        wanted = self.due(epoch, final)
        if not wanted:
            return {}
        t0 = time.perf_counter()
        max_samples = self.cfg.final_max_samples if final else self.cfg.max_samples
        values = feature_distances(sim_feats, real_feats, wanted, max_samples=max_samples, seed=self.cfg.seed)
        self.last_seconds = time.perf_counter() - t0
        return {FEATURE_PREFIX + k: v for k, v in values.items()}
