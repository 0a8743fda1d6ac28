"""A gap run: score one model on a sim and a real set in one pass each, then log and report the gap.

The pieces are shared by every stage that reports a gap:

- :func:`sim2real.eval.evaluate_domain` scores a labelled set (metrics, per-image predictions in
  ORIGINAL pixels, targets and ``embed`` features); the trainer builds the same
  :class:`~sim2real.eval.DomainEval` from its validation pass with :func:`domain_from_validation`;
- :func:`gap_record`: ``sim/<m>``, ``real/<m>``, ``gap/<m>`` (positive = real worse) and
  ``gap/feat_*`` (feature distances) as one flat, loggable record;
- :func:`write_gap_report`: ``report.html`` + PNGs (frames with predictions, t-SNE of sim vs real
  features, confusion matrices, localization error histograms), also sent to W&B via the logger;
- :func:`run_gap`: all of it for ``sim2real gap`` (config :class:`GapConfig`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from sim2real.config import ConfigError, choice, rng, to_dict
from sim2real.eval.domain import DomainEval, subset_rows
from sim2real.eval.metrics import METRIC_NAMES, task_metrics
from sim2real.gap.naming import FEATURE_PREFIX, sim_real_record
from sim2real.gap.tracker import FeatureGapTracker, GapTrackingConfig
from sim2real.tracking import TrackingConfig

TABLE_ORDER = METRIC_NAMES + ("loss",)


# --------------------------------------------------------------------------- evaluation


def domain_from_validation(name: str, metrics: dict, collected: Mapping[str, np.ndarray], pool,
                           tasks: Sequence[str]) -> DomainEval:
    """A :class:`DomainEval` from the trainer's ``validate(..., collect=...)`` pass over ``pool``."""
    index = np.asarray(collected["index"], np.int64)

    def load(row: int) -> Optional[np.ndarray]:
        d, i = pool.locate(index[row:row + 1])
        return pool.datasets[int(d[0])].load(int(i[0]))

    return DomainEval(name, metrics, np.asarray(collected["embed"], np.float32), dict(collected["pred"]),
                      pool.original_targets(index), load, tuple(tasks))


# --------------------------------------------------------------------------- records


def gap_record(sim: DomainEval | Mapping[str, Any], real: DomainEval | Mapping[str, Any],
               tracker: FeatureGapTracker | None = None, epoch: int = 0, final: bool = False,
               sim_features: Any = None, real_features: Any = None) -> dict[str, float]:
    """``sim/<m>``, ``real/<m>``, ``gap/<m>`` (positive = real worse) and, when a ``tracker`` is
    given and due, ``gap/feat_<distance>`` between the two feature sets (``sim.features`` /
    ``real.features`` unless ``sim_features`` / ``real_features`` are given)."""
    sim_m = sim.metrics if isinstance(sim, DomainEval) else sim
    real_m = real.metrics if isinstance(real, DomainEval) else real
    record = sim_real_record(task_metrics(sim_m), task_metrics(real_m))
    if tracker is not None:
        sf = sim_features if sim_features is not None else getattr(sim, "features", None)
        rf = real_features if real_features is not None else getattr(real, "features", None)
        if sf is not None and rf is not None:
            record.update(tracker(sf, rf, epoch=epoch, final=final))
    return record


def per_image_errors(dom: DomainEval) -> dict[str, np.ndarray]:
    """Per-image localization errors in ORIGINAL pixels: centre distance, mean distance of the
    visible keypoints, and box IoU (for the report's histograms)."""
    from sim2real.eval.metrics import box_iou, center_errors

    out: dict[str, np.ndarray] = {}
    p, t = dom.pred, dom.true
    if "center" in dom.tasks and "center" in p:
        out["center_err_px"] = center_errors(p["center"], t["center"])
    if "keypoints" in dom.tasks and "keypoints" in p and p["keypoints"].size and t["keypoints"].size:
        dist = np.linalg.norm(np.asarray(p["keypoints"], np.float64) - t["keypoints"], axis=-1)
        vis = np.asarray(t["kp_vis"]) == 2
        with np.errstate(invalid="ignore"):
            per = np.where(vis.any(1), (dist * vis).sum(1) / np.maximum(vis.sum(1), 1), np.nan)
        out["keypoint_err_px"] = per[np.isfinite(per)]
    if "box" in dom.tasks and "box" in p:
        out["box_iou"] = box_iou(p["box"], t["box"])
    return out


def _round(v: float, nd: int = 2) -> float:
    return round(float(v), nd)


def frame_items(dom: DomainEval, classes: Sequence[str], n: int = 6) -> list[tuple]:
    """Up to ``n`` evenly spaced ``(image, prediction, label)`` triples for the report's frame grid
    (predictions limited to the trained tasks, all in the image's own pixels)."""
    items = []
    for row in subset_rows(len(dom), n):
        img = dom.load(int(row))
        if img is None:
            continue
        label_id = int(dom.pred["label"][row])
        pred: dict[str, Any] = {"class": classes[label_id] if label_id < len(classes) else str(label_id),
                                "score": float(dom.pred["score"][row]) if "score" in dom.pred else None}
        if "center" in dom.tasks:
            pred["center"] = [_round(v) for v in dom.pred["center"][row]]
        if "box" in dom.tasks:
            pred["box"] = [_round(v) for v in dom.pred["box"][row]]
        if "keypoints" in dom.tasks and dom.pred["keypoints"].size:
            pred["keypoints"] = [[_round(u), _round(v), 1.0] for u, v in dom.pred["keypoints"][row]]
        x0, y0, x1, y1 = (float(v) for v in dom.true["box"][row])
        true_id = int(dom.true["label"][row])
        label = {"class_name": classes[true_id] if true_id < len(classes) else str(true_id),
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "center_px": [float(v) for v in dom.true["center"][row]]}
        if dom.true["keypoints"].size:
            label["keypoints"] = [[float(u), float(v), float(s)] for (u, v), s in
                                  zip(dom.true["keypoints"][row], dom.true["kp_vis"][row])]
        items.append((img, pred, label))
    return items


def write_gap_report(run_dir: str | Path, domains: Sequence[DomainEval], *, classes: Sequence[str],
                     features: Mapping[str, tuple[Any, Any]] | None = None, method: str | None = None,
                     title: str | None = None, logger: Any = None, seed: int = 0, num_frames: int = 6,
                     notes: Mapping[str, Sequence[str]] | None = None):
    """``write_report`` with everything a :class:`DomainEval` list offers: frames with predictions,
    confusion matrices (classification trained), localization error histograms and, with
    ``features`` (``{"first epoch": (sim, real), "last epoch": ...}``), a t-SNE per stage;
    ``notes``: ``{heading: [lines]}`` sections of plain text (e.g. which real frames were used)."""
    from sim2real.gap.report import write_report

    domains = [d for d in domains if d is not None and len(d)]
    tasks = set().union(*(d.tasks for d in domains)) if domains else set()
    confusion = {d.name: d.metrics["confusion"] for d in domains if "confusion" in d.metrics} if "cls" in tasks else {}
    loc = {d.name: errs for d in domains if (errs := per_image_errors(d))}
    frames = {d.name: frame_items(d, classes, num_frames) for d in domains} if num_frames > 0 else {}
    # With one feature stage the run's own (final) gap/feat_* values are the table's feature rows;
    # with several, write_report adds one row per stage (before vs after at a glance).
    several = bool(features) and len(features) > 1
    return write_report(run_dir, title=title, method=method, features=features or None,
                        confusion=confusion or None, classes=classes, loc_errors=loc or None,
                        frames=frames or None, logger=logger, seed=seed, compute_feature_gaps=several,
                        notes=notes)


def gap_table(record: Mapping[str, Any]) -> str:
    """A short fixed-width table: metric, sim, real, gap (+ = real worse), then feature distances."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"

    names = [k[4:] for k in record if k.startswith("sim/")]
    names = [m for m in TABLE_ORDER if m in names] + sorted(m for m in names if m not in TABLE_ORDER)
    lines = [f"{'metric':<24} {'sim':>10} {'real':>10} {'gap (+ = real worse)':>21}"]
    for m in names:
        lines.append(f"{m:<24} {fmt(record.get('sim/' + m)):>10} {fmt(record.get('real/' + m)):>10} "
                     f"{fmt(record.get('gap/' + m)):>21}")
    for k in sorted(record):
        if k.startswith(FEATURE_PREFIX) and not k.endswith(("_sigma", "_n_sim", "_n_real")):
            lines.append(f"{'feature ' + k[len(FEATURE_PREFIX):]:<24} {'':>10} {'':>10} {fmt(record[k]):>21}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- sim2real gap


@dataclass
class GapConfig:
    """``sim2real gap``: one checkpoint on a sim and a real labelled set, no training."""

    checkpoint: str = ""
    sim: str = ""                              # dataset folder or COCO .json
    sim_image_root: Optional[str] = None
    real: str = ""
    real_image_root: Optional[str] = None
    out: Optional[str] = None                  # default runs/gap/<checkpoint run>_<real set>
    overwrite: bool = False                    # replace an earlier gap run in `out`
    max_images: int = field(default=256, metadata=rng(0, None))   # per set, evenly spaced; 0 = all
    batch_size: int = field(default=16, metadata=rng(1, None))
    device: str = field(default="auto", metadata=choice("auto", "cpu", "cuda"))
    num_workers: int = field(default=0, metadata=rng(0, 64))
    num_frames: int = field(default=6, metadata=rng(0, 32))       # frames per domain in the report
    method: Optional[str] = None               # report label; default from the checkpoint
    seed: int = 0
    gap: GapTrackingConfig = field(default_factory=GapTrackingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        for key in ("checkpoint", "sim", "real"):
            if not getattr(self, key):
                raise ConfigError(key, "a path (--" + key + ")", getattr(self, key))
        self.gap.validate()


@dataclass
class GapResult:
    run_dir: Path
    record: dict                 # sim/, real/, gap/, gap/feat_* (the run's summary)
    report: Any                  # sim2real.gap.report.Report
    sim: DomainEval
    real: DomainEval


def _stem(path: str) -> str:
    p = Path(path)
    return (p.name if p.is_dir() else p.name.split(".")[0]) or "data"


def default_out(cfg: GapConfig) -> Path:
    ckpt = Path(cfg.checkpoint)
    return Path("runs") / "gap" / f"{ckpt.parent.name or ckpt.stem}_{_stem(cfg.real)}"


def checkpoint_method(meta: Mapping[str, Any]) -> str:
    """What produced a checkpoint, for the report: the adaptation method, else sim training."""
    extra = meta.get("extra") or {}
    for key in ("method", "adapt_method", "run"):
        if isinstance(extra.get(key), str):
            return extra[key]
    return "sim-trained (no adaptation)" if extra.get("train_config") else "unknown"


_RUN_FILES = ("metrics.jsonl", "summary.json", "report.html", "config.yaml", "run_info.json")


def _prepare_out(out: Path, overwrite: bool) -> None:
    from sim2real.io import check_writable

    if (out / "metrics.jsonl").exists():
        if not overwrite:
            raise ValueError(f"{out} already holds a gap run (metrics.jsonl); choose another --out or pass "
                             f"--overwrite")
        for name in _RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "report", ignore_errors=True)
    check_writable(out)


def run_gap(cfg: GapConfig) -> GapResult:
    """Evaluate ``cfg.checkpoint`` on both sets, log the gap (metrics.jsonl + W&B) and write the report."""
    from sim2real.data.dataset import CocoDataset
    from sim2real.runinfo import seed_everything, write_run_info
    from sim2real.tracking import make_logger
    from sim2real.eval.dataset import evaluate_domain
    from sim2real.eval.model import load_model, trained_tasks

    cfg.validate()
    seed_everything(cfg.seed)
    model, device, meta = load_model(cfg.checkpoint, cfg.device)
    tasks = trained_tasks(meta)
    kw = dict(classes=model.classes, num_keypoints=model.num_keypoints)
    sim_ds = CocoDataset(cfg.sim, image_root=cfg.sim_image_root, **kw)
    real_ds = CocoDataset(cfg.real, image_root=cfg.real_image_root, **kw)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    _prepare_out(out, cfg.overwrite)
    method = cfg.method or checkpoint_method(meta)
    write_run_info(out, cfg, seed=cfg.seed, checkpoint_meta={k: v for k, v in meta.items() if k != "extra"})
    logger = make_logger(out, cfg.tracking, to_dict(cfg))
    try:
        ev = dict(tasks=tasks, max_images=cfg.max_images or None, batch_size=cfg.batch_size, device=device,
                  num_workers=cfg.num_workers)
        sim = evaluate_domain(model, sim_ds, "sim", **ev)
        real = evaluate_domain(model, real_ds, "real", **ev)
        record = gap_record(sim, real, FeatureGapTracker(cfg.gap), final=True)
        logger.log(record, step=0)
        counts = {f"data/{d.name}_{k}": d.metrics[k] for d in (sim, real) for k in ("n", "num_corrupt")}
        logger.summary({**record, **counts, "method": method, "checkpoint": str(cfg.checkpoint)})
        report = write_gap_report(out, [sim, real], classes=model.classes, features={"model": (sim.features,
                                  real.features)}, method=method, logger=logger, seed=cfg.seed,
                                  title=f"sim2real gap: {cfg.checkpoint}", num_frames=cfg.num_frames)
    finally:
        logger.close()
    return GapResult(out, record, report, sim, real)
