"""The one logging hook every trainer calls.

``RunLogger`` always appends to ``<run_dir>/metrics.jsonl``; other sinks (W&B) plug in behind the
same three calls so trainers never know which sinks are on.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from sim2real.io import append_jsonl, atomic_write_json


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunLogger:
    def __init__(self, run_dir: str | Path, sinks: list | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.sinks = list(sinks or [])
        self._summary: dict[str, Any] = {}

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        record = {k: _plain(v) for k, v in metrics.items()}
        if step is not None:
            record["step"] = int(step)
        record.setdefault("time", time.time())
        append_jsonl(self.metrics_path, record)
        for sink in self.sinks:
            sink.log(record, step=step)

    def log_media(self, name: str, path: str | Path, kind: str = "image", step: int | None = None) -> None:
        for sink in self.sinks:
            sink.log_media(name, path, kind=kind, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        self._summary.update({k: _plain(v) for k, v in values.items()})
        atomic_write_json(self.run_dir / "summary.json", self._summary, indent=2)
        for sink in self.sinks:
            sink.summary(values)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
