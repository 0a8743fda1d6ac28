"""A sim training's result and its markdown reports: ``report.md`` and, with ``compare_scratch``,
``compare_scratch.md`` (pretrained vs random init on the same budget: the negative-transfer check)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from sim2real.engine import is_better
from sim2real.eval.metrics import CONTRACT_METRICS
from sim2real.train.config import MONITORS, TrainConfig

REPORT_METRICS = CONTRACT_METRICS + ("loss",)   # the tables of report.md and compare_scratch.md


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best: dict                      # validation metrics at the best epoch
    epochs_run: int
    stopped_early: bool
    num_corrupt: int
    cache: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    scratch: Optional["TrainResult"] = None
    comparison: Optional[str] = None   # markdown table (compare_scratch)


def scratch_config(cfg: TrainConfig) -> TrainConfig:
    """Same architecture, data, budget and seed, but random init with every stage trainable."""
    model = dataclasses.replace(cfg.model, weights="none", trainable_blocks=-1)
    return dataclasses.replace(cfg, model=model, compare_scratch=False, cache=False,
                               run_dir=str(Path(cfg.run_dir) / "scratch"))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def per_class_keys(best: dict, classes: Sequence[str] | None = None) -> list[str]:
    """The per-class ``ap50/<class>`` keys of a metrics dict, in class order (``classes``) or as found."""
    if classes is not None:
        return [f"ap50/{c}" for c in classes if f"ap50/{c}" in best]
    return [k for k in best if k.startswith("ap50/")]


def comparison_table(pre: TrainResult, scratch: TrainResult, monitor: str) -> str:
    rows = ["| metric | pretrained | scratch |", "|---|---|---|"]
    per_class = per_class_keys(pre.best) + [k for k in per_class_keys(scratch.best) if k not in pre.best]
    for k in REPORT_METRICS + tuple(per_class):
        if k in pre.best or k in scratch.best:
            rows.append(f"| {k} | {_fmt(pre.best.get(k))} | {_fmt(scratch.best.get(k))} |")
    rows.append(f"| best epoch | {pre.best_epoch + 1} | {scratch.best_epoch + 1} |")
    rows.append(f"| train seconds | {pre.seconds:.1f} | {scratch.seconds:.1f} |")
    a, b = pre.best.get(monitor), scratch.best.get(monitor)
    better = is_better(a, b, MONITORS[monitor]) if a is not None else False
    verdict = (f"Pretrained start is better on validation {monitor}." if better else
               f"WARNING: the pretrained start is NOT better than random init on validation {monitor} "
               f"({_fmt(a)} vs {_fmt(b)}): possible negative transfer; check the backbone, input size and "
               f"the frozen stages.")
    if not better:
        warnings.warn(verdict, RuntimeWarning, stacklevel=3)
    return "# Pretrained vs scratch (same architecture, data and budget)\n\n" + "\n".join(rows) + f"\n\n{verdict}\n"


def train_report(cfg: TrainConfig, r: TrainResult, classes: Sequence[str]) -> str:
    lines = [f"# Sim training: {Path(cfg.run_dir).name}", "",
             f"- backbone `{cfg.model.backbone}` (weights {cfg.model.weights}), head `{cfg.model.head.type}`, "
             f"trainable backbone stages: {cfg.model.trainable_blocks}",
             f"- classes: {', '.join(classes)}; tasks: {', '.join(cfg.tasks)}",
             f"- epochs run: {r.epochs_run}/{cfg.epochs}{' (early stop)' if r.stopped_early else ''}; "
             f"best epoch: {r.best_epoch + 1} (monitor val {cfg.monitor})",
             f"- feature cache: {'on' if r.cache else 'off'}"
             + (f" ({sum(c['hit'] for c in r.cache)}/{len(r.cache)} entries reused)" if r.cache else ""),
             f"- corrupt images skipped: {r.num_corrupt}", f"- time: {r.seconds:.1f} s", "",
             "| validation metric | best |", "|---|---|"]
    for k in REPORT_METRICS:
        if k in r.best:
            lines.append(f"| {k} | {_fmt(r.best[k])} |")
    pose = any(f"pose_center_err_cm_median/{c}" in r.best for c in classes)  # keypoints trained: pose metrics
    lines += ["", "| class | validation AP50 (best epoch) | AP |" + (" pose centre err cm (median) |" if pose else ""),
              "|---|---|---|" + ("---|" if pose else "")]
    for c in classes:
        if f"ap50/{c}" in r.best or f"ap/{c}" in r.best:
            lines.append(f"| {c} | {_fmt(r.best.get(f'ap50/{c}'))} | {_fmt(r.best.get(f'ap/{c}'))} |"
                         + (f" {_fmt(r.best.get(f'pose_center_err_cm_median/{c}'))} |" if pose else ""))
        else:
            lines.append(f"| {c} | not labelled | not labelled |" + (" not labelled |" if pose else ""))
    return "\n".join(lines) + "\n"
