"""The one logging hook every trainer calls.

``RunLogger`` always appends to ``<run_dir>/metrics.jsonl``; other sinks (W&B) plug in behind the
same three calls so trainers never know which sinks are on. A sink that raises is dropped with one
warning: tracking trouble never stops training, and metrics.jsonl keeps being written.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

from sim2real.io import append_jsonl, atomic_write_json, output_error


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunLogger:
    """Writes ``metrics.jsonl`` (one record per ``log``) and ``summary.json``; forwards to sinks.

    A sink is any object with ``log(record, step)``, ``log_media(name, path, kind, step)``,
    ``summary(values)`` and ``close()``. Build one with W&B attached via
    :func:`sim2real.tracking.make_logger`.
    """

    def __init__(self, run_dir: str | Path, sinks: list | None = None):
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_error(e, self.run_dir, "cannot create the run folder") from None
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.sinks = list(sinks or [])
        self._summary: dict[str, Any] = {}
        self._closed = False

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - no tracking failure may stop training
                self.sinks.remove(sink)
                warnings.warn(f"tracking sink {type(sink).__name__}.{method} failed ({type(e).__name__}: {e}); "
                              f"sink dropped, local logging to {self.metrics_path} continues",
                              RuntimeWarning, stacklevel=3)

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        record = {k: _plain(v) for k, v in metrics.items()}
        if step is not None:
            record["step"] = int(step)
        record.setdefault("time", time.time())
        append_jsonl(self.metrics_path, record)
        self._forward("log", record, step=step)

    def log_media(self, name: str, path: str | Path, kind: str = "image", step: int | None = None) -> None:
        self._forward("log_media", name, path, kind=kind, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        self._summary.update({k: _plain(v) for k, v in values.items()})
        atomic_write_json(self.run_dir / "summary.json", self._summary, indent=2)
        self._forward("summary", values)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._forward("close")

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
