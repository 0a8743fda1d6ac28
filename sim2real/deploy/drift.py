"""Drift monitor: how far the recent frames' features have moved from a reference real set.

Two numbers on the pooled embedding, computed every ``every`` frames over a sliding window:

- ``drift/mean_dist``: L2 distance between the window's mean embedding and the reference mean,
  divided by the reference's mean distance-to-centre (so 1.0 ~ "one typical reference spread").
- ``drift/mmd2``: squared MMD (unbiased) with an RBF kernel whose bandwidth is the median pairwise
  distance of the reference set (median heuristic, fixed once so values are comparable over time).

``update`` returns the record to log; ``alarm`` turns True when the watched metric rises past the
threshold (one warning per crossing, not one per frame).
"""

from __future__ import annotations

from collections import deque

import numpy as np


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
    """Median pairwise Euclidean distance (off-diagonal); 1.0 for degenerate sets."""
    if len(x) < 2:
        return 1.0
    d = np.sqrt(_sq_dists(x, x))
    med = float(np.median(d[np.triu_indices(len(x), k=1)]))
    return med if med > 1e-12 else 1.0


def mmd2_rbf(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased squared MMD between samples ``x`` (n, D) and ``y`` (m, D), RBF kernel of width ``sigma``."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 samples per set, got {n} and {m}")
    g = 1.0 / (2.0 * sigma * sigma)
    kxx = np.exp(-g * _sq_dists(x, x))
    kyy = np.exp(-g * _sq_dists(y, y))
    kxy = np.exp(-g * _sq_dists(x, y))
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


class DriftMonitor:
    def __init__(self, reference: np.ndarray, window: int = 32, every: int = 8, threshold: float | None = None,
                 metric: str = "mmd2"):
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or len(ref) < 2:
            raise ValueError(f"drift reference needs at least 2 embeddings (N, D), got shape {ref.shape}")
        if metric not in ("mmd2", "mean_dist"):
            raise ValueError(f"drift metric must be 'mmd2' or 'mean_dist', got {metric!r}")
        self.ref = ref
        self.ref_mean = ref.mean(0)
        self.ref_spread = float(np.linalg.norm(ref - self.ref_mean, axis=1).mean()) or 1.0
        self.sigma = median_bandwidth(ref)
        self.window: deque[np.ndarray] = deque(maxlen=max(2, window))
        self.every, self.threshold, self.metric = max(1, every), threshold, metric
        self.history: list[dict] = []
        self.alarm = False
        self.alarms = 0
        self._seen = 0

    def update(self, embedding: np.ndarray, frame_index: int) -> dict | None:
        """Add one frame's embedding; every ``every`` frames (window full enough) return a record."""
        self.window.append(np.asarray(embedding, dtype=np.float64).reshape(-1))
        self._seen += 1
        if len(self.window) < min(self.window.maxlen, 4) or self._seen % self.every:
            return None
        w = np.stack(self.window)
        rec = {"frame": int(frame_index), "drift/window": len(w),
               "drift/mean_dist": float(np.linalg.norm(w.mean(0) - self.ref_mean) / self.ref_spread),
               "drift/mmd2": mmd2_rbf(w, self.ref, self.sigma)}
        value = rec[f"drift/{self.metric}"]
        crossed = self.threshold is not None and value > self.threshold
        rec["drift/alarm"] = bool(crossed)
        rec["drift/new_alarm"] = bool(crossed and not self.alarm)
        if rec["drift/new_alarm"]:
            self.alarms += 1
        self.alarm = crossed
        self.history.append(rec)
        return rec

    def summary(self) -> dict:
        if not self.history:
            return {"metric": self.metric, "threshold": self.threshold, "checks": 0, "reference_size": len(self.ref)}
        vals = {k: [h[k] for h in self.history] for k in ("drift/mmd2", "drift/mean_dist")}
        return {"metric": self.metric, "threshold": self.threshold, "checks": len(self.history),
                "reference_size": len(self.ref), "bandwidth": self.sigma, "alarms": self.alarms,
                "last": {k: v[-1] for k, v in vals.items()},
                "max": {k: float(np.max(v)) for k, v in vals.items()},
                "mean": {k: float(np.mean(v)) for k, v in vals.items()},
                "history": self.history}
