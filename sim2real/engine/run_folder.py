"""Opening a run folder: refuse one that already holds a run, record the config, start the logger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim2real.io import atomic_write_text, check_writable, read_jsonl
from sim2real.runinfo import write_run_info
from sim2real.tracking import RunLogger, make_logger


def check_fresh_run_dir(run_dir: str | Path, marker: str, remedy: str) -> Path:
    """``run_dir``, created and proven writable, unless it already holds a run.

    A run is recognised by ``marker`` (a file every run of the caller writes, e.g. its
    checkpoint or ``metrics.jsonl``): writing a second run there would mix two runs' records.
    ``remedy`` tells the user what to do instead (resume it, choose another folder, ...).
    """
    run_dir = Path(run_dir)
    if (run_dir / marker).exists():
        raise ValueError(f"run_dir {run_dir} already holds a run ({marker}); {remedy}")
    return check_writable(run_dir)


def open_run(run_dir: str | Path, cfg: Any, tracking: Any, logged_config: dict[str, Any], *,
             seed: int | None, **run_info: Any) -> RunLogger:
    """Write ``config.yaml`` and ``run_info.json`` (seed, versions, commit, ``run_info``), then
    return the run's logger (``metrics.jsonl`` + W&B per ``tracking``; ``logged_config`` is the
    config W&B shows). The caller closes the logger."""
    write_run_info(run_dir, cfg, seed=seed, **run_info)
    return make_logger(run_dir, tracking, logged_config)


def truncate_metrics(run_dir: Path, start_epoch: int) -> None:
    """Drop records of epochs a resumed run will redo (written after the last checkpoint)."""
    path = run_dir / "metrics.jsonl"
    if path.exists():
        keep = [r for r in read_jsonl(path) if r.get("epoch", -1) < start_epoch]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
