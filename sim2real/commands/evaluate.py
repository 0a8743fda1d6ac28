"""``sim2real evaluate``: score a checkpoint on a labelled dataset (sim or real)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HELP = "score a checkpoint on a labelled dataset (sim or real)"
DESCRIPTION = """\
Score a checkpoint on a labelled COCO dataset: classification accuracy and confusion matrix; median
centre error (pixels of the ORIGINAL images), mean box IoU, PCK of visible keypoints at 0.05 of the
box diagonal. Writes eval_<name>.json and eval_<name>.md next to the checkpoint (or into --out).

The dataset's categories are matched to the model's classes by name; images with no annotation of a
model class are counted and left out, corrupt images are skipped and counted.

examples:
  sim2real evaluate --checkpoint runs/train/sim/best.pt --data data/sim/tabletop
  sim2real evaluate --checkpoint runs/train/sim/best.pt \\
      --data ../shared/real/visp_cube/dev_frames_000_099.coco.json \\
      --image-root /usr/share/visp-images-data/ViSP-images --name real_dev
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model checkpoint (best.pt, checkpoint.pt, adapted...)")
    p.add_argument("--data", required=True, help="dataset folder (with annotations.json) or COCO .json file")
    p.add_argument("--image-root", help="folder the COCO file_name entries are relative to (default: its folder)")
    p.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    p.add_argument("--name", help="report name: eval_<name>.json/.md (default: from the dataset path)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--num-workers", type=int, default=0)


def dataset_name(path: str) -> str:
    p = Path(path)
    stem = p.name if p.is_dir() else p.name.split(".")[0]
    return stem or "data"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_summary(result: dict) -> str:
    m, classes = result["metrics"], result["classes"]
    lines = [f"# Evaluation of {result['checkpoint']}", "", f"- data: {result['data']}",
             f"- images scored: {m['n']} (corrupt skipped: {m['num_corrupt']}, without a target: "
             f"{m['num_without_target']})", "", "| metric | value |", "|---|---|"]
    for k in ("acc", "center_err_px_median", "center_err_px_mean", "box_iou_mean", "pck@0.05"):
        if k in m:
            lines.append(f"| {k} | {_fmt(m[k])} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ pred | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for name, row in zip(classes, m["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from sim2real.data.dataset import CocoDataset
    from sim2real.io import atomic_write_json, atomic_write_text, check_writable
    from sim2real.train.inference import evaluate_dataset, load_model, trained_tasks

    model, device, meta = load_model(args.checkpoint, args.device)
    ds = CocoDataset(args.data, image_root=args.image_root, classes=model.classes, num_keypoints=model.num_keypoints)
    out_dir = check_writable(Path(args.out) if args.out else Path(args.checkpoint).parent)
    metrics = evaluate_dataset(model, ds, trained_tasks(meta), args.batch_size, device, args.num_workers)
    name = args.name or dataset_name(args.data)
    result = {"checkpoint": str(args.checkpoint), "data": str(args.data), "image_root": str(ds.image_root),
              "classes": model.classes, "metrics": metrics}
    atomic_write_json(out_dir / f"eval_{name}.json", result, indent=2)
    atomic_write_text(out_dir / f"eval_{name}.md", markdown_summary(result))
    parts = [f"{k}={_fmt(metrics[k])}" for k in ("acc", "center_err_px_median", "box_iou_mean", "pck@0.05") if k in metrics]
    print(f"{name}: {metrics['n']} images, {', '.join(parts)} -> {out_dir / f'eval_{name}.json'}"
          + (f" ({metrics['num_corrupt']} corrupt image(s) skipped)" if metrics["num_corrupt"] else ""))
    return 0
