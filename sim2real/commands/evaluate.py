"""``sim2real evaluate``: score a checkpoint on a labelled dataset (sim or real)."""

from __future__ import annotations

import argparse
import json
import dataclasses
import math
from pathlib import Path

from sim2real.eval.metrics import CONTRACT_METRICS, METRIC_NAMES, POSE_METRIC_NAMES

HELP = "score a checkpoint on a labelled dataset (sim or real)"
DESCRIPTION = """\
Score a checkpoint on a labelled COCO dataset, every object of every class: COCO box AP (IoU
0.5:0.95), AP50, AP75 and AR, overall and per class (ap50/<class>, ap/<class>); on the detections
matched to a labelled object: class accuracy and confusion matrix, median centre error (pixels of
the ORIGINAL images), mean box IoU, PCK of visible keypoints at 0.05 of the box diagonal; false
positives and duplicates per image at the model's score threshold, and the expected calibration
error of the scores. A file scores only the classes it labels. Writes eval_<name>.json and
eval_<name>.md next to the checkpoint (or into --out), and a run folder eval_<name>/ beside them
with metrics.jsonl, summary.json, predictions.jsonl (per image: every detection from the score
threshold and every labelled instance), a self-contained report.html (frames with predictions,
per-class table, precision-recall curves, reliability diagram, confusion matrix, error
histograms) and a W&B offline run
(unless --no-wandb or tracking.mode=disabled). Metrics are named <domain>/<metric>, with domain
sim or real (--domain; by default "sim" for a generator dataset folder with manifest.json, else
"real"); `sim2real gap` scores a sim and a real set together and reports the gap.

The dataset's categories are matched to the model's classes by name; images with no annotation of a
model class are scored as negatives (every detection there is a false positive) and counted,
corrupt images are skipped and counted.

examples:
  sim2real evaluate --checkpoint runs/train/sim/best.pt --data data/sim/tabletop
  sim2real evaluate --checkpoint runs/train/sim/best.pt \\
      --data ../shared/real/visp_cube/dev_frames_000_099.coco.json \\
      --image-root /usr/share/visp-images-data/ViSP-images --name real_dev tracking.project=cube
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model checkpoint (best.pt, checkpoint.pt, adapted...)")
    p.add_argument("--data", required=True, help="dataset folder (with annotations.json) or COCO .json file")
    p.add_argument("--image-root", help="folder the COCO file_name entries are relative to (default: its folder)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="read file_name entries that point outside the image root ('../x', absolute paths)")
    p.add_argument("--allow-eval-frames", action="store_true",
                   help="the FINAL evaluation only: score evaluation-only frames (e.g. ViSP cube 100-217)")
    p.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    p.add_argument("--name", help="report name: eval_<name>.json/.md (default: from the dataset path)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--domain", choices=["auto", "sim", "real"], default="auto",
                   help="metric prefix sim/ or real/ (auto: sim for a folder with manifest.json, else real)")
    p.add_argument("--flip-tta", action="store_true",
                   help="6D pose: also run each frame mirrored and average its corners in (finer corners, "
                        "a second forward per frame; docs/benchmarks.md '6D pose')")
    p.add_argument("--no-wandb", action="store_true", help="no W&B run (same as tracking.mode=disabled)")
    p.add_argument("--no-report", action="store_true", help="no report.html / PNGs")
    p.add_argument("tracking", nargs="*", metavar="tracking.key=value",
                   help="W&B settings, e.g. tracking.project=cube tracking.group=eval tracking.mode=online")


def dataset_name(path: str) -> str:
    p = Path(path)
    stem = p.name if p.is_dir() else p.name.split(".")[0]
    return stem or "data"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


PER_CLASS = (("ap50", "AP50"), ("ap", "AP"))


def per_class_rows(metrics: dict, classes) -> list[tuple[str, list[str]]]:
    """``[(class, [AP50, AP] as text)]``; a class the labels do not define reads "not labelled"."""
    rows = []
    for c in classes:
        if not any(f"{k}/{c}" in metrics for k, _ in PER_CLASS):
            rows.append((c, ["not labelled"] * len(PER_CLASS)))
        else:
            rows.append((c, [_fmt(metrics.get(f"{k}/{c}")) for k, _ in PER_CLASS]))
    return rows


POSE_LINE = (("pose_center_err_cm_median", "centre err {} cm"), ("pose_center_err_cm_mean", "(mean {})"),
             ("pose_adds_cm_median", "ADD-S {} cm"), ("pose_adds_0.1d", "ADD-S < 0.1 diameter {}"),
             ("pose_rot_err_deg_median", "rotation err {} deg"), ("corner_err_px_median", "corner err {} px"),
             ("pose_ok_fraction", "pose solved {}"), ("pose_reproj_px_median", "reprojection {} px"))


def pose_line(metrics: dict) -> str | None:
    """One line of the pose metrics (medians over the matched instances with a labelled pose), or None
    when they were not scored (keypoints not trained)."""
    if not any(k in metrics for k in POSE_METRIC_NAMES):
        return None
    if all(metrics.get(k) is None for k in POSE_METRIC_NAMES):
        return "pose: - (no matched instance with labelled corners or pose)"
    return ("pose (medians over the matched instances with a labelled pose): "
            + ", ".join(fmt.format(_fmt(metrics.get(k))) for k, fmt in POSE_LINE).replace(", (mean", " (mean"))


def markdown_summary(result: dict) -> str:
    m, classes = result["metrics"], result["classes"]
    lines = [f"# Evaluation of {result['checkpoint']}", "", f"- data: {result['data']}",
             f"- images scored: {m['n']}, labelled objects: {m.get('n_instances', '-')} (corrupt skipped: "
             f"{m['num_corrupt']}, without an object of a model class: {m['num_without_target']})", "",
             "| metric | value |", "|---|---|"]
    for k in METRIC_NAMES + ("recall@thr", "precision@thr"):
        if k in m:
            lines.append(f"| {k} | {_fmt(m[k])} |")
    if "confusion" in m:
        lines += ["", "Confusion matrix of the matched detections (rows: true class, columns: predicted):", "",
                  "| true \\ pred | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        for name, row in zip(classes, m["confusion"]):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "Per class (COCO box AP; AP50 at IoU 0.5, AP over IoU 0.5:0.95):", "",
              "| class | " + " | ".join(h for _, h in PER_CLASS) + " |", "|---" * (len(PER_CLASS) + 1) + "|"]
    for c, vals in per_class_rows(m, classes):
        lines.append(f"| {c} | " + " | ".join(vals) + " |")
    pose = pose_line(m)
    if pose is not None:
        lines += ["", pose]
        per_cls = [(c, m[f"pose_center_err_cm_median/{c}"]) for c in classes if f"pose_center_err_cm_median/{c}" in m]
        if per_cls:
            lines += ["", "| class | pose centre err cm (median) |", "|---|---|"]
            lines += [f"| {c} | {_fmt(v)} |" for c, v in per_cls]
    return "\n".join(lines) + "\n"


def guess_domain(path: str) -> str:
    """``sim`` for a generator dataset folder (its manifest.json is not a real subset's, whose
    ``kind`` is ``real``: e.g. adapt's ``real/test``), else ``real``."""
    p = Path(path) / "manifest.json"
    if not p.is_file():
        return "real"
    try:
        kind = json.loads(p.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    return "real" if kind == "real" else "sim"


def tracking_config(items: list[str], no_wandb: bool):
    from sim2real.config import ConfigError, load_config
    from sim2real.tracking import TrackingConfig

    bad = [s for s in items if not s.startswith("tracking.") or "=" not in s]
    if bad:
        raise ConfigError("tracking", "overrides of the form tracking.<key>=<value>", bad[0],
                          source="command-line overrides")
    overrides = [s[len("tracking."):] for s in items] + (["mode=disabled"] if no_wandb else [])
    return load_config(TrackingConfig, None, overrides)


def _track(args, run_dir: Path, dom, model, meta: dict, result: dict, domain: str, tracking) -> Path | None:
    """metrics.jsonl + W&B (``<domain>/<metric>``) and report.html of one evaluation."""
    from sim2real.eval.metrics import task_metrics
    from sim2real.gap.run import checkpoint_method, write_gap_report, write_image_records
    from sim2real.runinfo import write_run_info
    from sim2real.tracking import make_logger

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # re-evaluating replaces, never appends
    run_cfg = {"checkpoint": result["checkpoint"], "data": result["data"], "image_root": result["image_root"],
               "domain": domain, "batch_size": args.batch_size, "tracking": dataclasses.asdict(tracking)}
    write_run_info(run_dir, run_cfg, checkpoint_meta={k: v for k, v in meta.items() if k != "extra"})
    method = checkpoint_method(meta)
    with make_logger(run_dir, tracking, run_cfg) as logger:
        m = result["metrics"]
        record = {f"{domain}/{k}": v for k, v in task_metrics(m).items()}
        logger.log(record, step=0)
        logger.summary({**record, f"data/{domain}_n": m["n"], f"data/{domain}_num_corrupt": m["num_corrupt"],
                        "method": method, "checkpoint": result["checkpoint"]})
        write_image_records(run_dir / "predictions.jsonl", dom, model.classes)
        if args.no_report:
            return None
        report = write_gap_report(run_dir, [dom], classes=model.classes, method=method, logger=logger,
                                  title=f"sim2real evaluate: {result['checkpoint']} on {result['data']}")
    return report.html_path


def run(args: argparse.Namespace) -> int:
    from sim2real.data.dataset import CocoDataset
    from sim2real.eval.dataset import evaluate_domain
    from sim2real.eval.model import load_model, trained_tasks
    from sim2real.io import atomic_write_json, atomic_write_text, check_writable

    tracking = tracking_config(list(args.tracking), args.no_wandb)
    model, device, meta = load_model(args.checkpoint, args.device)
    ds = CocoDataset(args.data, image_root=args.image_root, classes=model.classes, num_keypoints=model.num_keypoints,
                     allow_outside_root=args.allow_outside_root, allow_protected=args.allow_eval_frames)
    out_dir = check_writable(Path(args.out) if args.out else Path(args.checkpoint).parent)
    domain = guess_domain(args.data) if args.domain == "auto" else args.domain
    # evaluate_dataset's loop, also keeping predictions and features for the report.
    dom = evaluate_domain(model, ds, domain, trained_tasks(meta), batch_size=args.batch_size, device=device,
                          num_workers=args.num_workers, flip_tta=args.flip_tta)
    metrics = dom.metrics
    name = args.name or dataset_name(args.data)
    result = {"checkpoint": str(args.checkpoint), "data": str(args.data), "image_root": str(ds.image_root),
              "classes": model.classes, "domain": domain, "flip_tta": bool(args.flip_tta), "metrics": metrics}
    atomic_write_json(out_dir / f"eval_{name}.json", result, indent=2)
    atomic_write_text(out_dir / f"eval_{name}.md", markdown_summary(result))
    report = _track(args, out_dir / f"eval_{name}", dom, model, meta, result, domain, tracking)
    parts = [f"{k}={_fmt(metrics[k])}" for k in CONTRACT_METRICS if k in metrics and k not in POSE_METRIC_NAMES]
    print(f"{name} ({domain}): {metrics['n']} images, {', '.join(parts)} -> {out_dir / f'eval_{name}.json'}"
          + (f" ({metrics['num_corrupt']} corrupt image(s) skipped)" if metrics["num_corrupt"] else ""))
    if report is not None:
        print(f"report: {report}")
    width = max(len(c) for c in list(model.classes) + ["class"])
    print("per class:")
    print(f"  {'class':<{width}} " + " ".join(f"{h:>12}" for _, h in PER_CLASS))
    for c, vals in per_class_rows(metrics, model.classes):
        print(f"  {c:<{width}} " + " ".join(f"{v:>12}" for v in vals))
    pose = pose_line(metrics)
    if pose is not None:
        print(pose)
    return 0
