"""A gap run: score one model on a sim and a real set in one pass each, then log and report the gap.

The pieces are shared by every stage that reports a gap:

- :func:`sim2real.eval.evaluate_domain` scores a labelled set (metrics, per-image predictions in
  ORIGINAL pixels, targets and ``embed`` features); the trainer builds the same
  :class:`~sim2real.eval.DomainEval` from its validation pass with :func:`domain_from_validation`;
- :func:`gap_record`: ``sim/<m>``, ``real/<m>``, ``gap/<m>`` (positive = real worse) and
  ``gap/feat_*`` (feature distances) as one flat, loggable record;
- :func:`write_gap_report`: ``report.html`` + PNGs (frames with every predicted and labelled
  instance, t-SNE of sim vs real features, confusion matrices, localization error histograms of
  the matched instances, precision-recall curves per class, the detection-score reliability
  diagram) and the per-class AP table, also sent to W&B via the logger;
- :func:`image_records` / :func:`write_image_records`: one JSON record per image with every
  predicted instance from the model's score threshold and every ground-truth instance
  (``predictions_<domain>.jsonl``);
- :func:`run_gap`: all of it for ``sim2real gap`` (config :class:`GapConfig`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from sim2real.config import ConfigError, choice, rng, to_dict
from sim2real.eval.detection import match_instances as detection_match
from sim2real.eval.domain import DomainEval, subset_rows
from sim2real.eval.instances import select
from sim2real.eval.metrics import METRIC_NAMES, POSE_PER_CLASS, task_metrics
from sim2real.eval.records import prediction_record, rounded
from sim2real.gap.naming import FEATURE_PREFIX, sim_real_record
from sim2real.gap.tracker import FeatureGapTracker, GapTrackingConfig
from sim2real.tracking import TrackingConfig

TABLE_ORDER = METRIC_NAMES + ("loss",)
# per-class keys ``<metric>/<class>`` of score(): perception_metrics' and the pose metrics'
PER_CLASS_METRICS = ("ap", "ap50") + POSE_PER_CLASS


# --------------------------------------------------------------------------- evaluation


def domain_from_validation(name: str, metrics: dict, collected: Mapping[str, np.ndarray], pool,
                           tasks: Sequence[str], score_thresh: float = 0.3) -> DomainEval:
    """A :class:`DomainEval` from the trainer's ``validate(..., collect=...)`` pass over ``pool``
    (``score_thresh``: the model's reporting threshold, ``model.head.score_thresh``)."""
    index = np.asarray(collected["index"], np.int64)
    d_of, i_of = pool.locate(index)
    names = [pool.datasets[int(d)].file_names[int(i)] for d, i in zip(d_of, i_of)]

    def load(row: int) -> Optional[np.ndarray]:
        return pool.datasets[int(d_of[row])].load(int(i_of[row]))

    return DomainEval(name, metrics, np.asarray(collected["embed"], np.float32), dict(collected["pred"]),
                      pool.original_targets(index), load, tuple(tasks), score_thresh=float(score_thresh),
                      scored=list(pool.scored_classes), names=names)


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


def match_instances(dom: DomainEval, classes: Sequence[str]) -> np.ndarray:
    """``(N, P)`` ground-truth slot of each prediction (-1 = unmatched), matched as the metrics match
    (:func:`sim2real.eval.detection.match_instances`: the scored classes' predictions from
    ``dom.score_thresh``, class-agnostic, IoU >= 0.5, or nearest centre without a trained box)."""
    pred = dom.pred if "box" in dom.tasks else {k: v for k, v in dom.pred.items() if k != "box"}
    return detection_match(pred, dom.true, dom.scored_classes(classes), dom.score_thresh)


def per_image_errors(dom: DomainEval, classes: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Localization errors of the matched instances (:func:`match_instances`) in ORIGINAL pixels,
    one value per matched pair: centre distance, mean distance of the visible keypoints, and box
    IoU (for the report's histograms)."""
    from sim2real.eval.metrics import box_iou, center_errors

    out: dict[str, np.ndarray] = {}
    p, t = dom.pred, dom.true
    if not p or "label" not in p or not len(p["label"]):
        return out
    classes = list(classes) if classes is not None else [str(c) for c in range(int(max(
        np.max(p["label"], initial=-1), np.max(t["label"], initial=-1))) + 1)]
    match = match_instances(dom, classes)
    ii, jj = np.nonzero(match >= 0)
    gg = match[ii, jj]
    if "center" in dom.tasks and "center" in p:
        out["center_err_px"] = center_errors(np.asarray(p["center"])[ii, jj], np.asarray(t["center"])[ii, gg])
    kp = np.asarray(p.get("keypoints", np.zeros((0,))))
    if "keypoints" in dom.tasks and kp.ndim == 4 and kp.shape[2] and np.asarray(t["keypoints"]).shape[2:3] == kp.shape[2:3]:
        dist = np.linalg.norm(kp[ii, jj].astype(np.float64) - np.asarray(t["keypoints"], np.float64)[ii, gg], axis=-1)
        vis = np.asarray(t["kp_vis"])[ii, gg] == 2
        with np.errstate(invalid="ignore"):
            per = np.where(vis.any(1), (dist * vis).sum(1) / np.maximum(vis.sum(1), 1), np.nan)
        out["keypoint_err_px"] = per[np.isfinite(per)]
    if "box" in dom.tasks and "box" in p:
        out["box_iou"] = box_iou(np.asarray(p["box"])[ii, jj], np.asarray(t["box"])[ii, gg])
    return out


def _class_name(classes: Sequence[str], c: int) -> str:
    return classes[c] if 0 <= c < len(classes) else str(c)


def true_instances(dom: DomainEval, row: int, classes: Sequence[str]) -> list[dict]:
    """Image ``row``'s ground-truth instances: ``{"class", "class_id", "box": [x0, y0, x1, y1],
    "center": [u, v], "keypoints": [[u, v, vis], ...], "ignore": bool}`` (ORIGINAL pixels)."""
    t = dom.true
    label = np.asarray(t["label"][row])
    kps = np.asarray(t["keypoints"][row]) if "keypoints" in t else np.zeros((len(label), 0, 2))
    vis = np.asarray(t["kp_vis"][row]) if "kp_vis" in t else np.zeros(kps.shape[:2])
    ignore = np.asarray(t["ignore"][row]) if "ignore" in t else np.zeros(len(label), bool)
    out = []
    for j in np.flatnonzero(label >= 0):
        out.append({"class": _class_name(classes, int(label[j])), "class_id": int(label[j]),
                    "box": [rounded(v) for v in t["box"][row][j]], "center": [rounded(v) for v in t["center"][row][j]],
                    "keypoints": [[rounded(u), rounded(v), int(s)] for (u, v), s in zip(kps[j], vis[j])],
                    "ignore": bool(ignore[j])})
    return out


def image_records(dom: DomainEval, classes: Sequence[str]) -> list[dict]:
    """One record per evaluated image: ``{"image": file name (or "row": index), "instances": [the
    predict record's instances from dom.score_thresh, best first], "ground_truth": [...]}``
    (:func:`sim2real.eval.records.prediction_record`, :func:`true_instances`; ORIGINAL pixels)."""
    recs = []
    for row in range(len(dom.pred.get("label", ()))):
        where = {"image": dom.names[row]} if dom.names is not None else {"row": row}
        rec = prediction_record(select(dom.pred, row, dom.score_thresh), classes, **where)
        rec["ground_truth"] = true_instances(dom, row, classes)
        recs.append(rec)
    return recs


def write_image_records(path: str | Path, dom: DomainEval, classes: Sequence[str]) -> Path:
    """:func:`image_records` as JSONL (one image a line) at ``path``."""
    from sim2real.io import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in image_records(dom, classes)))


def frame_items(dom: DomainEval, classes: Sequence[str], n: int = 6) -> list[tuple]:
    """Up to ``n`` evenly spaced ``(image, prediction, label)`` triples for the report's frame grid:
    ``prediction`` = ``{"instances": [...]}`` with every predicted instance from the model's score
    threshold (class, score, box, centre, keypoints, limited to the trained tasks), ``label`` =
    ``{"instances": [...]}`` with every ground-truth instance; all in the image's own pixels."""
    items = []
    for row in subset_rows(len(dom), n):
        img = dom.load(int(row))
        if img is None:
            continue
        rec = prediction_record(select(dom.pred, int(row), dom.score_thresh), classes)
        for inst in rec["instances"]:
            for task in ("center", "box", "keypoints"):
                if task not in dom.tasks:
                    inst.pop(task, None)
        items.append((img, {"instances": rec["instances"]}, {"instances": true_instances(dom, int(row), classes)}))
    return items


def per_class_table(domains: Sequence[DomainEval], classes: Sequence[str]) -> dict[str, dict[str, Optional[dict]]]:
    """``{domain: {class: {"ap": v, "ap50": v[, "pose_center_err_cm_median": v]} | None}}``: None = the domain's labels do not define
    the class ("not labelled"); a value is None where it is undefined (no instance of it)."""
    out: dict[str, dict[str, Optional[dict]]] = {}
    for d in domains:
        scored = set(d.scored_classes(classes))
        # the pose key only where the metrics have it (keypoints trained): the report adds its column then
        keys = [m for m in PER_CLASS_METRICS if m in ("ap", "ap50") or any(f"{m}/{c}" in d.metrics for c in classes)]
        out[d.name] = {c: ({m: d.metrics.get(f"{m}/{c}") for m in keys} if k in scored else None)
                       for k, c in enumerate(classes)}
    return out


def pr_curves_of(domains: Sequence[DomainEval], classes: Sequence[str]) -> dict[str, dict]:
    """``{domain: detection.pr_curves(...)}`` (IoU 0.5, per scored class) of the domains with boxes."""
    from sim2real.eval.detection import pr_curves

    return {d.name: pr_curves(d.pred, d.true, classes, d.scored_classes(classes)) for d in domains
            if "box" in d.tasks and "box" in d.pred and len(d.pred["label"])}


def reliability_of(domains: Sequence[DomainEval], classes: Sequence[str]) -> dict[str, dict]:
    """``{domain: detection.reliability(...) + {"ece": metrics' ece}}`` of the detection scores."""
    from sim2real.eval.detection import reliability

    out = {}
    for d in domains:
        if "label" in d.pred and len(d.pred["label"]):
            table = reliability({k: v for k, v in d.pred.items() if k != "box" or "box" in d.tasks}, d.true,
                                d.scored_classes(classes))
            out[d.name] = {**table, "ece": d.metrics.get("ece")}
    return out


def write_gap_report(run_dir: str | Path, domains: Sequence[DomainEval], *, classes: Sequence[str],
                     features: Mapping[str, tuple[Any, Any]] | None = None, method: str | None = None,
                     title: str | None = None, logger: Any = None, seed: int = 0, num_frames: int = 6,
                     notes: Mapping[str, Sequence[str]] | None = None):
    """``write_report`` with everything a :class:`DomainEval` list offers: frames with every
    predicted and labelled instance, the per-class AP / AP50 table, precision-recall curves per
    class (IoU 0.5), the reliability diagram of the detection scores (with the ECE), confusion
    matrices of the matched instances (classification trained), localization error histograms and,
    with ``features`` (``{"first epoch": (sim, real), "last epoch": ...}``), a t-SNE per stage;
    ``notes``: ``{heading: [lines]}`` sections of plain text (e.g. which real frames were used)."""
    from sim2real.gap.report import write_report

    domains = [d for d in domains if d is not None and len(d)]
    tasks = set().union(*(d.tasks for d in domains)) if domains else set()
    confusion = {d.name: d.metrics["confusion"] for d in domains if "confusion" in d.metrics} if "cls" in tasks else {}
    loc = {d.name: errs for d in domains if (errs := per_image_errors(d, classes))}
    frames = {d.name: frame_items(d, classes, num_frames) for d in domains} if num_frames > 0 else {}
    # With one feature stage the run's own (final) gap/feat_* values are the table's feature rows;
    # with several, write_report adds one row per stage (before vs after at a glance).
    several = bool(features) and len(features) > 1
    return write_report(run_dir, title=title, method=method, features=features or None,
                        confusion=confusion or None, classes=classes, loc_errors=loc or None,
                        frames=frames or None, logger=logger, seed=seed, compute_feature_gaps=several,
                        notes=notes, per_class=per_class_table(domains, classes) if domains else None,
                        pr_curves=pr_curves_of(domains, classes) or None,
                        reliability=reliability_of(domains, classes) or None)


def _is_per_class(name: str) -> bool:
    return name.partition("/")[0] in PER_CLASS_METRICS and "/" in name


def gap_table(record: Mapping[str, Any]) -> str:
    """A short fixed-width table: metric, sim, real, gap (+ = real worse), then per class (``ap50/<class>``,
    ``ap/<class>``, ``pose_center_err_cm_median/<class>``; "not labelled" where the real labels do not define
    the class), then feature distances."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"

    names = [k[4:] for k in record if k.startswith("sim/")]
    overall = [m for m in TABLE_ORDER if m in names] + sorted(m for m in names if m not in TABLE_ORDER
                                                              and not _is_per_class(m))
    per_class = sorted((m for m in names if _is_per_class(m)), key=lambda m: (m.partition("/")[2], m))
    w = max([24] + [len(m) for m in overall + per_class])   # pose_center_err_cm_median/<class> is long
    lines = [f"{'metric':<{w}} {'sim':>10} {'real':>12} {'gap (+ = real worse)':>21}"]
    for m in overall + per_class:
        real = record.get("real/" + m)
        real_s = "not labelled" if real is None and _is_per_class(m) else fmt(real)
        lines.append(f"{m:<{w}} {fmt(record.get('sim/' + m)):>10} {real_s:>12} {fmt(record.get('gap/' + m)):>21}")
    for k in sorted(record):
        if k.startswith(FEATURE_PREFIX) and not k.endswith(("_sigma", "_n_sim", "_n_real")):
            lines.append(f"{'feature ' + k[len(FEATURE_PREFIX):]:<{w}} {'':>10} {'':>12} {fmt(record[k]):>21}")
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


_RUN_FILES = ("metrics.jsonl", "summary.json", "report.html", "config.yaml", "run_info.json",
              "predictions_sim.jsonl", "predictions_real.jsonl")


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
        for d in (sim, real):
            write_image_records(out / f"predictions_{d.name}.jsonl", d, model.classes)
        report = write_gap_report(out, [sim, real], classes=model.classes, features={"model": (sim.features,
                                  real.features)}, method=method, logger=logger, seed=cfg.seed,
                                  title=f"sim2real gap: {cfg.checkpoint}", num_frames=cfg.num_frames)
    finally:
        logger.close()
    return GapResult(out, record, report, sim, real)
