"""Weights & Biases behind :class:`~sim2real.tracking.RunLogger`: offline by default, never fatal.

Offline (the default) writes ``<run_dir>/wandb/offline-run-*/run-*.wandb`` with no network;
upload it later with ``wandb sync <run_dir>/wandb/offline-run-*``. ``online`` streams to the
W&B server when logged in (``wandb login``) and falls back to offline if it cannot start.
``disabled`` (or the environment variable ``WANDB_MODE=disabled``) attaches no sink. Any W&B
failure (not installed, cannot start, disk full, an exception while logging) gives ONE warning,
then the sink switches itself off and the run's ``metrics.jsonl`` keeps being written.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sim2real.config import choice
from sim2real.tracking.logger import RunLogger

MEDIA_KINDS = ("image", "html", "video", "file")
_CROSS_SPLIT = ("sim/", "real/", "gap/")  # already say which data they come from


@dataclass
class TrackingConfig:
    """W&B settings of a run (``tracking:`` block of a stage config)."""

    mode: str = field(default="offline", metadata=choice("offline", "online", "disabled"))
    project: str = "sim2real"
    entity: Optional[str] = None
    name: Optional[str] = None  # default: the run folder's name
    group: Optional[str] = None  # e.g. the `compare` sweep a run belongs to
    dir: Optional[str] = None  # where wandb/ goes; default: the run folder
    tags: list[str] = field(default_factory=list)
    log_media: bool = True
    system_stats: bool = False  # W&B's CPU/memory sampler: off, it costs CPU on small machines


def _history_value(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, bool) or isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return None  # strings and containers are bookkeeping, not chartable history


def wandb_record(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record as a W&B history row.

    ``split`` becomes a key prefix (``{"split": "val", "acc": .9}`` -> ``val/acc``) so train and
    val rows do not overwrite each other (keys already under ``sim/``, ``real/``, ``gap/`` or the
    split keep their name); ``time`` is dropped (W&B stamps rows itself); non-numeric
    values are dropped. ``step`` and ``epoch`` are kept as plain columns.
    """
    split = record.get("split")
    prefix = f"{split}/" if isinstance(split, str) and split else ""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("split", "time"):
            continue
        value = _history_value(value)
        if value is None:
            continue
        keep = key in ("step", "epoch") or not prefix or key.startswith(_CROSS_SPLIT + (prefix,))
        out[key if keep else prefix + key] = value
    return out


class WandbSink:
    """A RunLogger sink writing to one W&B run. ``active`` is False once it has switched itself off."""

    def __init__(self, cfg: TrackingConfig, run_dir: str | Path, config: dict[str, Any] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run = None
        self.active = False
        self._missing_media: set[str] = set()
        try:
            self.run = self._start(cfg.mode, config)
            self.active = True
            return
        except Exception as e:  # noqa: BLE001
            error = e
        if cfg.mode == "online":
            try:
                self.run = self._start("offline", config)
                self.active = True
                warnings.warn(f"W&B online run could not start ({type(error).__name__}: {error}); logging "
                              "offline instead (upload later with `wandb sync`)", RuntimeWarning, stacklevel=3)
                return
            except Exception as e:  # noqa: BLE001
                error = RuntimeError(f"online: {error}; offline: {type(e).__name__}: {e}")
        self._fail("start", error)

    def _start(self, mode: str, config: dict[str, Any] | None):
        import wandb

        wandb_dir = Path(self.cfg.dir) if self.cfg.dir else self.run_dir
        wandb_dir.mkdir(parents=True, exist_ok=True)
        # console="off": W&B must not wrap stdout/stderr; init_timeout bounds the wait for an
        # unreachable server before the offline fallback.
        settings = wandb.Settings(console="off", x_disable_stats=not self.cfg.system_stats,
                                  x_disable_machine_info=not self.cfg.system_stats, silent=True,
                                  init_timeout=30)
        run = wandb.init(mode=mode, project=self.cfg.project, entity=self.cfg.entity,
                         name=self.cfg.name or self.run_dir.name, group=self.cfg.group,
                         tags=list(self.cfg.tags) or None, dir=str(wandb_dir), config=config or {},
                         reinit="create_new", settings=settings)
        try:
            # Our own "step" is the x-axis: W&B's internal step must increase monotonically, ours
            # may not (a resumed run, an eval record logged after the train record of one step).
            run.define_metric("step")
            run.define_metric("*", step_metric="step")
        except Exception:
            run.finish(exit_code=1)
            raise
        return run

    def _fail(self, what: str, e: BaseException) -> None:
        was_started = self.run is not None
        self.active = False
        warnings.warn(f"W&B {what} failed ({type(e).__name__}: {e}); W&B logging is off for this run, "
                      f"local logging to {self.run_dir / 'metrics.jsonl'} continues", RuntimeWarning, stacklevel=3)
        if was_started:
            run, self.run = self.run, None
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001 - already reported above
                pass

    @property
    def run_path(self) -> Path | None:
        """The run's local folder (``.../wandb/offline-run-*``), if started."""
        try:
            return Path(self.run.dir).parent if self.run is not None else None
        except Exception:  # noqa: BLE001
            return None

    def log(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.active:
            return
        row = wandb_record(record)
        if step is not None:
            row["step"] = int(step)
        try:
            self.run.log(row)
        except Exception as e:  # noqa: BLE001
            self._fail("log", e)

    def log_media(self, name: str, path: str | Path, kind: str = "image", step: int | None = None) -> None:
        if not self.active or not self.cfg.log_media:
            return
        path = Path(path)
        if kind not in MEDIA_KINDS or not path.is_file():
            # A caller's mistake, not a W&B failure: skip this item, keep the sink on.
            if name not in self._missing_media:
                self._missing_media.add(name)
                why = f"kind {kind!r} is not one of {list(MEDIA_KINDS)}" if kind not in MEDIA_KINDS else \
                    f"{path} is not a file"
                warnings.warn(f"W&B media '{name}' skipped: {why}", RuntimeWarning, stacklevel=3)
            return
        try:
            import wandb

            if kind == "file":
                self.run.save(str(path), base_path=str(path.parent), policy="now")
                return
            if kind == "image":
                obj = wandb.Image(str(path))
            elif kind == "html":
                obj = wandb.Html(path.read_text(encoding="utf-8"), inject=False, data_is_not_path=True)
            else:
                obj = wandb.Video(str(path))
            row: dict[str, Any] = {name: obj}
            if step is not None:
                row["step"] = int(step)
            self.run.log(row)
        except Exception as e:  # noqa: BLE001
            self._fail("log_media", e)

    def summary(self, values: dict[str, Any]) -> None:
        if not self.active:
            return
        clean = {k: v for k, v in ((k, _history_value(v)) for k, v in values.items()) if v is not None}
        try:
            self.run.summary.update(clean)
        except Exception as e:  # noqa: BLE001
            self._fail("summary", e)

    def close(self) -> None:
        if self.run is None:
            return
        run_path, offline = self.run_path, self.run.settings.mode == "offline"
        run, self.run = self.run, None
        self.active = False
        try:
            run.finish()
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"W&B finish failed ({type(e).__name__}: {e}); the local W&B files may be "
                          "incomplete, metrics.jsonl is not affected", RuntimeWarning, stacklevel=2)
            return
        if offline and run_path is not None:
            print(f"W&B offline run saved; upload it with: wandb sync {run_path}", file=sys.stderr)


def wandb_disabled_by_env() -> bool:
    """W&B's own switch: ``WANDB_MODE=disabled`` (or ``WANDB_DISABLED=true``) turns the sink off."""
    return (os.environ.get("WANDB_MODE", "").lower() == "disabled"
            or os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"))


def make_logger(run_dir: str | Path, tracking_cfg: TrackingConfig | dict | None = None,
                config_dict: dict[str, Any] | None = None) -> RunLogger:
    """A RunLogger for ``run_dir`` with the W&B sink attached unless ``mode`` is ``disabled``.

    ``tracking_cfg``: a TrackingConfig, a dict of its fields, or None (defaults: offline).
    ``WANDB_MODE=disabled`` in the environment wins over the config (W&B's usual switch).
    ``config_dict``: the resolved stage config, stored as the W&B run config.
    """
    if tracking_cfg is None:
        tracking_cfg = TrackingConfig()
    elif isinstance(tracking_cfg, dict):
        unknown = set(tracking_cfg) - set(TrackingConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"tracking config: unknown key(s) {sorted(unknown)}; known keys: "
                             f"{sorted(TrackingConfig.__dataclass_fields__)}")
        tracking_cfg = TrackingConfig(**tracking_cfg)
    if tracking_cfg.mode not in ("offline", "online", "disabled"):
        raise ValueError(f"tracking.mode: expected one of ['offline', 'online', 'disabled'], got {tracking_cfg.mode!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sinks = []
    if tracking_cfg.mode != "disabled" and not wandb_disabled_by_env():
        sink = WandbSink(tracking_cfg, run_dir, config_dict)
        if sink.active:
            sinks.append(sink)
    return RunLogger(run_dir, sinks=sinks)


@dataclass
class OfflineRun:
    """What a local ``.wandb`` transaction log holds, as decoded by wandb's own reader."""

    path: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]


def find_offline_runs(folder: str | Path) -> list[Path]:
    """``run-*.wandb`` files under ``folder`` (a run folder, its ``wandb/`` or an offline-run dir)."""
    return sorted(Path(folder).rglob("run-*.wandb"))


def read_offline_run(wandb_file: str | Path, timeout: float = 60.0) -> OfflineRun:
    """Decode a ``run-*.wandb`` file with ``wandb leet inspect --json`` (wandb's record reader).

    The Python ``DataStore`` reader of older wandb releases is gone in wandb 0.31; the CLI that
    ships with the package (backed by wandb-core) is the supported way to read the records.
    """
    wandb_file = Path(wandb_file)
    if not wandb_file.is_file():
        raise FileNotFoundError(f"no W&B transaction log at {wandb_file}")
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_file)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ValueError(f"wandb could not read {wandb_file}: {proc.stderr.strip() or proc.stdout.strip()}")
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        kind = rec.get("type")
        if kind == "run":
            config.update(rec["run"].get("config", {}).get("update", {}))
        elif kind == "config":
            config.update(rec["config"].get("update", {}))
        elif kind == "history":
            history.append(rec["history"].get("item", {}))
        elif kind == "summary":
            summary.update(rec["summary"].get("update", {}))
    config.pop("_wandb", None)
    return OfflineRun(wandb_file, config, history, summary)
