"""Per-stage latency of the live loop and its throughput, summarised as p50/p95/p99 and FPS."""

from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

import numpy as np

# wait: the output stage waiting for the next inferred frame; total: a frame's read -> outputs written.
STAGES = ("wait", "preprocess", "adapt", "infer", "records", "draw", "write", "total")


class LatencyStats:
    """Collects one duration per stage per frame (milliseconds)."""

    def __init__(self, stages: tuple[str, ...] = STAGES, fps_window: int = 30):
        self.samples: dict[str, list[float]] = {s: [] for s in stages}
        self._recent_ends: deque[float] = deque(maxlen=fps_window + 1)
        self.t_start: float | None = None
        self.t_end: float | None = None
        self.frames = 0

    def start(self) -> None:
        self.t_start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - t0) * 1e3)

    def add(self, name: str, ms: float) -> None:
        self.samples.setdefault(name, []).append(float(ms))

    def frame_done(self) -> None:
        self.frames += 1
        now = time.perf_counter()
        self.t_end = now
        self._recent_ends.append(now)

    def recent_fps(self) -> float:
        """FPS over the last few frames (what the overlay shows)."""
        if len(self._recent_ends) < 2:
            return 0.0
        span = self._recent_ends[-1] - self._recent_ends[0]
        return (len(self._recent_ends) - 1) / span if span > 0 else 0.0

    def last(self, name: str) -> float:
        s = self.samples.get(name) or [0.0]
        return s[-1]

    def summary(self) -> dict:
        """``{"frames", "wall_s", "fps", "latency_ms": {stage: {mean, p50, p95, p99, max, n}}}``."""
        wall = (self.t_end - self.t_start) if (self.t_start is not None and self.t_end is not None) else 0.0
        out: dict = {"frames": self.frames, "wall_s": round(wall, 4),
                     "fps": round(self.frames / wall, 3) if wall > 0 else 0.0, "latency_ms": {}}
        for name, vals in self.samples.items():
            if not vals:
                continue
            a = np.asarray(vals, dtype=np.float64)
            p50, p95, p99 = np.percentile(a, [50, 95, 99])
            out["latency_ms"][name] = {"mean": round(float(a.mean()), 3), "p50": round(float(p50), 3),
                                       "p95": round(float(p95), 3), "p99": round(float(p99), 3),
                                       "max": round(float(a.max()), 3), "n": int(a.size)}
        return out


def format_summary(summary: dict) -> str:
    """A small fixed-width table for the terminal."""
    lines = [f"frames {summary['frames']}  wall {summary['wall_s']:.2f} s  FPS {summary['fps']:.2f}",
             f"{'stage':<14}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}"]
    for name, s in summary["latency_ms"].items():
        lines.append(f"{name:<14}{s['p50']:>10.2f}{s['p95']:>10.2f}{s['p99']:>10.2f}{s['mean']:>10.2f}")
    return "\n".join(lines)
