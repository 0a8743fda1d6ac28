"""``sim2real compare``: source-only, real-only fine-tune and every adaptation method, one table.

All rows share the data, the seed, the splits and the budget (epochs x steps, batch sizes,
unfreezing schedule); only the method differs. Real metrics are on the held-out real TEST split
in original image pixels; sim metrics on the sim validation images; ``gap/<m>`` is positive when
real is worse (:mod:`sim2real.gap.naming`). Writes ``compare.md`` and ``compare.csv`` and logs one
record per row through :class:`~sim2real.tracking.RunLogger`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import platform
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sim2real.adapt.config import AdaptConfig, method_label, parse_methods
from sim2real.adapt.selection import RULE_TEXT
from sim2real.adapt.result import RunResult
from sim2real.adapt.trainer import AdaptSession
from sim2real.config import ConfigError, rng, to_dict
from sim2real.io import atomic_write_json, atomic_write_text, check_writable
from sim2real.runinfo import write_run_info
from sim2real.tracking import TrackingConfig, make_logger

DEFAULT_METHODS = ["finetune", "coral", "mmd", "dann", "adabn"]
TABLE_METRICS = ("ap50", "center_err_px_median", "box_iou_mean", "pck@0.05")
CSV_COLUMNS = ["k", "method", "kind", "selection", "best_epoch", "epochs_run",
               "real/ap50", "real/ap", "real/fp_per_image", "real/dup_per_image", "sim/ap50", "sim/ap", "gap/ap50",
               "real/center_err_px_median", "real/center_err_px_mean", "real/box_iou_mean", "real/pck@0.05",
               "real/acc", "sim/center_err_px_median", "sim/box_iou_mean", "sim/pck@0.05", "sim/acc",
               "gap/center_err_px_median", "gap/box_iou_mean", "gap/pck@0.05", "gap/feat_mmd", "gap/feat_coral",
               "align/feat_mmd",
               "real_val/ap50", "real_val/center_err_px_median", "real_val/box_iou_mean", "selected_by", "wall_s",
               "warnings"]


@dataclass
class CompareConfig:
    """``adapt``: the shared settings (data, budget, seed); ``methods``: one row each (``a+b`` combines)."""

    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    ks: list[int] = field(default_factory=list, metadata=rng(0, None))   # empty = [adapt.k]
    run_dir: str = "runs/compare/visp_cube"
    title: str = "ViSP cube"

    def validate(self) -> None:
        if not self.methods:
            raise ConfigError("methods", f"at least one method drawn from {DEFAULT_METHODS}", self.methods)
        for m in self.methods:
            try:
                parse_methods(m)
            except ConfigError as e:
                raise ConfigError("methods", e.expected, m) from None
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError("methods", "each entry once", self.methods)

    def k_values(self) -> list[int]:
        return list(self.ks) if self.ks else [self.adapt.k]


@dataclass
class CompareResult:
    run_dir: Path
    rows: list[dict]
    markdown: Path
    csv: Path
    acceptance: dict[int, dict]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _row(k: int, res: RunResult) -> dict:
    rec = res.record()
    rec["k"] = k
    rec["warnings"] = " | ".join(res.warnings)
    rec["note"] = res.note
    return rec


# What "beats source-only" compares on the real TEST split, in order of preference: box AP50 (every
# instance counts), else (rows without AP, e.g. older results) the median centre error on matched instances.
ACCEPT_METRICS = (("ap50", "max"), ("center_err_px_median", "min"))


def acceptance(rows: list[dict]) -> dict:
    """Best adapted row against source-only on the real TEST split. "Best" is chosen without the
    test split: highest real VAL AP50 (else lowest real VAL median centre error), or with k = 0 the
    label-free rule (lowest MMD). It beats source-only when its real test AP50 is higher (else, without
    AP50, when its centre error is lower and its box IoU higher)."""
    src = next((r for r in rows if r["kind"] == "source_only"), None)
    adapted_all = [r for r in rows if r["kind"] == "adapted"]
    metric, goal = next(((m, g) for m, g in ACCEPT_METRICS
                         if src and src.get(f"real/{m}") is not None
                         and any(r.get(f"real/{m}") is not None for r in adapted_all)), (None, None))
    if metric is None:
        return {"available": False}
    adapted = [r for r in adapted_all if r.get(f"real/{metric}") is not None]
    sign = -1.0 if goal == "max" else 1.0
    if all(r.get("selection") == "label_free" for r in adapted):
        # No labels may choose the method either: the label-free rule, lowest sim-real feature MMD.
        # (the selection rule's alignment-feature MMD when logged, else the embed-feature MMD)
        key = "align/feat_mmd" if any(r.get("align/feat_mmd") is not None for r in adapted) else "gap/feat_mmd"
        pick_by, sign = "label-free MMD", 1.0
    elif any(r.get(f"real_val/{metric}") is not None for r in adapted):
        pick_by, key = "real val", f"real_val/{metric}"
    else:
        pick_by, key = "real test", f"real/{metric}"
    pool = [r for r in adapted if r.get(key) is not None] or adapted
    best = min(pool, key=lambda r: sign * r[key] if r.get(key) is not None else math.inf)
    err_b, err_s = best.get("real/center_err_px_median"), src.get("real/center_err_px_median")
    iou_b, iou_s = best.get("real/box_iou_mean"), src.get("real/box_iou_mean")
    ap_b, ap_s = best.get("real/ap50"), src.get("real/ap50")
    if metric == "ap50":
        beats = ap_b > ap_s
    else:
        beats = (err_s is not None and iou_s is not None and iou_b is not None and err_b < err_s and iou_b > iou_s)
    return {"available": True, "best": best["method"], "picked_by": pick_by, "metric": metric,
            "ap50": [ap_b, ap_s], "center_err": [err_b, err_s], "box_iou": [iou_b, iou_s],
            "beats_source_only": bool(beats)}


def to_markdown(rows: list[dict], title: str, meta: dict) -> str:
    labelled = meta.get("real_labelled", True)
    lines = [f"# sim2real compare: {title}", "",
             f"Machine: {meta['machine']}; date: {meta['date']}; seed {meta['seed']}; budget: {meta['budget']}."]
    if labelled:
        lines.append(f"Real metrics on the held-out real TEST split "
                     f"({meta['test_frames']}) in original pixels ({meta['image_size']}); sim metrics on "
                     f"{meta['sim_val']} sim validation images; gap = sim vs real, positive = real worse.")
        head = ("| k | method | real AP50 ↑ | real centre err px (median) ↓ | real box IoU ↑ | real PCK@0.05 ↑ | "
                "sim AP50 | sim centre err px | sim box IoU | sim PCK@0.05 | gap AP50 | gap centre err | gap IoU | "
                "gap PCK | selection | best epoch | wall s |")
        rule = "|---:|---|" + "---:|" * 3 * len(TABLE_METRICS) + "---|---:|---:|"
    else:
        lines.append(f"{meta.get('real_metrics', 'no labelled real frames: real metrics not computed')}; sim "
                     f"metrics on {meta['sim_val']} sim validation images; align MMD = sim vs unlabelled real "
                     "features (lower = closer).")
        head = ("| k | method | sim AP50 | sim centre err px | sim box IoU | sim PCK@0.05 | align MMD | "
                "selection | best epoch | wall s |")
        rule = "|---:|---|" + "---:|" * (len(TABLE_METRICS) + 1) + "---|---:|---:|"
    lines += ["", head, rule]
    for r in rows:
        cells = [str(r["k"]), r["method"]]
        if labelled:
            cells += [_fmt(r.get(f"real/{m}")) for m in TABLE_METRICS]
            cells += [_fmt(r.get(f"sim/{m}")) for m in TABLE_METRICS]
            cells += [_fmt(r.get(f"gap/{m}")) for m in TABLE_METRICS]
        else:
            cells += [_fmt(r.get(f"sim/{m}")) for m in TABLE_METRICS] + [_fmt(r.get("align/feat_mmd"))]
        cells += [{"real_val": "real val", "label_free": "label-free (MMD)"}.get(r.get("selection") or "", "—"),
                  _fmt(r.get("best_epoch")), _fmt(r.get("wall_s"), 4)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Selection rules: " + "; ".join(f"**{k}**: {v}" for k, v in RULE_TEXT.items()) + ".",
              "source-only = the sim checkpoint as is; real-only fine-tune = ImageNet backbone + new head trained "
              "on the k labelled real frames only, same budget. Wall time of source-only includes building the "
              "shared feature caches."]
    if meta.get("real_frames"):
        lines += ["", "## Real frames used", ""] + [f"- {line}" for line in meta["real_frames"]]
    if meta.get("pipeline_fixes"):
        lines += ["", "## Input pipeline: domain-check fixes applied", ""] + [f"- {f}" for f in meta["pipeline_fixes"]]
    notes = [f"- k={r['k']} {r['method']}: {r['note']}" for r in rows if str(r.get("note", "")).startswith("not run")]
    warns = [f"- k={r['k']} {r['method']}: {r['warnings']}" for r in rows if r.get("warnings")]
    if notes:
        lines += ["", "Notes:"] + notes
    if warns:
        lines += ["", "**Warnings:**"] + warns
    for k, acc in meta.get("acceptance", {}).items():
        if acc.get("available"):
            lines.append(f"\nk={k}: best adapted by {acc['picked_by']} = **{acc['best']}**: test AP50 "
                         f"{_fmt(acc['ap50'][0])} vs source-only {_fmt(acc['ap50'][1])}, "
                         f"centre err "
                         f"{_fmt(acc['center_err'][0])} vs source-only {_fmt(acc['center_err'][1])} px, box IoU "
                         f"{_fmt(acc['box_iou'][0])} vs {_fmt(acc['box_iou'][1])} -> "
                         f"{'beats' if acc['beats_source_only'] else 'does NOT beat'} source-only.")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in CSV_COLUMNS})
    return buf.getvalue()


def machine_description() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = "CPU"
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} on {dev} ({threads} threads)"


def run_compare(cfg: CompareConfig, backbone=None) -> CompareResult:
    out = check_writable(cfg.run_dir)
    write_run_info(out, cfg, seed=cfg.adapt.seed)
    group = cfg.adapt.tracking.group or out.name
    logger = make_logger(out, dataclasses.replace(cfg.adapt.tracking, group=group), to_dict(cfg))
    run_name = cfg.adapt.tracking.name or out.name  # the compare run's own W&B name
    rows: list[dict] = []
    acc: dict[int, dict] = {}
    t_start = time.perf_counter()
    bank = None
    try:
        for k in cfg.k_values():
            def child(method: str, k: int = k) -> TrackingConfig:
                # One W&B group per compare run; names say which k and method a child run is.
                return dataclasses.replace(cfg.adapt.tracking, group=group, name=f"{run_name}/k{k}/{method}")

            acfg = dataclasses.replace(cfg.adapt, k=k, baselines=False)
            acfg.validate()
            kdir = out / f"k{k:02d}"
            sess = AdaptSession(acfg, kdir, backbone=backbone, bank=bank)
            bank, backbone = sess.bank, sess._pristine  # later k values reuse the backbone and caches
            results = [sess.source_only(kdir / "source_only", tracking=child("source_only")),
                       sess.real_only(kdir / "real_only", tracking=child("real_only"))]
            for spec in cfg.methods:
                methods = parse_methods(spec)
                name = method_label(methods)
                results.append(sess.adapt(methods, kdir / name.replace("+", "_"), name=name, tracking=child(name)))
            k_rows = [_row(k, r) for r in results]
            for r in k_rows:
                logger.log({"k": k, **{c: v for c, v in r.items() if not isinstance(v, str) or c == "method"}})
            rows += k_rows
            acc[k] = acceptance(k_rows)
            if acc[k].get("available") and not acc[k]["beats_source_only"]:
                warnings.warn(f"compare k={k}: the best adapted model ({acc[k]['best']}) does not beat source-only "
                              f"on real test {acc[k]['metric']}", RuntimeWarning, stacklevel=2)
        meta = table_meta(cfg.adapt, sess.data, acc, time.perf_counter() - t_start)
        md = atomic_write_text(out / "compare.md", to_markdown(rows, cfg.title, meta))
        cs = atomic_write_text(out / "compare.csv", to_csv(rows))
        atomic_write_json(out / "compare.json", {"meta": meta, "rows": rows}, indent=1)
        logger.summary({"acceptance": acc, "total_wall_s": meta["total_wall_s"], "machine": meta["machine"]})
        logger.log_media("compare/table", md, kind="file")
        return CompareResult(out, rows, md, cs, acc)
    finally:
        logger.close()


def table_meta(c: AdaptConfig, data, acc: dict, wall_s: float) -> dict:
    """Header facts of a results table: machine, date, budget, splits."""
    rf = data.real_frames
    part = rf["labelled"].get("test")
    test_frames = part["frames"] if part else "none"
    return {"machine": machine_description(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "seed": c.seed, "test_frames": test_frames,
            "budget": f"{c.epochs} epochs x {c.steps_per_epoch} steps, batches sim {c.batch_size_sim} / real "
                      f"{c.batch_size_real} / unlabelled {c.batch_size_unlabelled}, lr {c.lr:g}, unfreeze at "
                      f"epochs {list(c.unfreeze_epochs)}, L2-SP {c.l2sp_weight:g}, λ {c.align_weight:g}, "
                      f"input {list(data.pipeline.input_hw)}{' gray' if data.pipeline.grayscale else ''}",
            "image_size": _image_size(data), "sim_val": len(data.sim_val), "acceptance": acc,
            "real_labelled": bool(part),
            "real_metrics": rf["real_metrics"], "real_frames": data.real_frames_lines(),
            "pipeline_fixes": [a["change"] for a in data.pipeline.applied_fixes],
            "total_wall_s": round(wall_s, 1)}


def results_table(k: int, results: list[RunResult]) -> list[dict]:
    return [_row(k, r) for r in results]


def _image_size(data) -> str:
    ds = data.real.get("test")
    if ds is None or not len(ds.image_hw):
        return "original size"
    h, w = (int(v) for v in ds.image_hw[0])
    return f"{w}x{h}"
