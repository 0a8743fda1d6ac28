"""``sim2real suggest-labels``: rank real frames to label first (diversity + model uncertainty)."""

from __future__ import annotations

import argparse
import logging

from sim2real.commands._common import (
    add_config_arguments,
    config_from_args,
    flag_overrides,
)

HELP = "rank unlabelled real frames to label first (TypiClust / k-centre diversity + model uncertainty)"
DESCRIPTION = """\
Rank unlabelled real frames so that labelling the first k gives adaptation the most, in the
checkpoint's feature space (features=object: pooled over the model's own detections of the object,
so a hand or a background change does not count as a new view; features=frame: the whole frame):

  strategy=kcenter        (default) k-centre greedy (frames unlike those already picked; the first
                          pick is the most typical frame) plus the model's uncertainty (low top
                          score; flip=true adds disagreement with its own answer on the mirrored
                          frame, a second forward pass): one list for any k
  strategy=typiclust      for a labelling budget (budget=K, the number of frames you will label):
                          k-means into K clusters and the most typical frame of each; the list's
                          first K rows are that selection, so make one list per K

Deterministic: same inputs and seed, same list.

Candidates:
  source=null (default)   the labelling pool of the real labels' splits (same keys and defaults as
                          adapt: real_labels, n_val, n_test, split_gap; ViSP cube demo: frames 0-45)
  source=<folder|video>   your footage (frames=[start, stop), stride, max_frames); with real_labels
                          named, its labelled val/test frames are left out before they are read
Evaluation-only frames are never proposed (nor read: the ViSP cube frames 100-217 are refused).

Outputs in run_dir: suggestions.json + suggestions.csv (ranked list: rank, frame, file_name, path,
score, diversity, uncertainty, cluster, typicality), contact_sheet.png (top `sheet` frames with
their ranks), report.html, config.yaml, run_info.json, metrics.jsonl, W&B (offline).
Then label the top k and run: sim2real adapt --from best.pt kshot_list=<run_dir>/suggestions.json k=K

examples:
  sim2real suggest-labels --from runs/train/visp_cube/best.pt
  sim2real suggest-labels --from best.pt strategy=typiclust budget=10
  sim2real suggest-labels --from best.pt source=my_frames/ real_labels=null sheet=10
  sim2real suggest-labels --from best.pt source=clip.mp4 stride=5 strategy=kcenter uncertainty_weight=0
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="checkpoint", metavar="CHECKPOINT", help="checkpoint (config key checkpoint)")
    add_config_arguments(p, "configs/suggest_labels.yaml")
    p.add_argument("--run-dir", help="output folder (config key run_dir)")
    p.add_argument("--no-wandb", action="store_true", help="no W&B run (tracking.mode=disabled)")


def run(args: argparse.Namespace) -> int:
    from sim2real.adapt.suggest_run import SuggestConfig, suggest

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra = flag_overrides(args, {"checkpoint": "checkpoint", "run_dir": "run_dir"},
                           {"no_wandb": "tracking.mode=disabled"})
    cfg = config_from_args(SuggestConfig, args, extra)
    doc = suggest(cfg)
    rows = doc["suggestions"]
    print(f"{doc['candidates']} candidate frame(s) from {doc['source']}; {doc['excluded_evaluation_only']} "
          f"evaluation-only left out, {doc['skipped_unreadable']} unreadable skipped")
    print("label first: " + ", ".join(str(r["frame"] if r["frame"] is not None else r["file_name"])
                                      for r in rows[:10]) + (" ..." if len(rows) > 10 else ""))
    print(f"{cfg.run_dir}: suggestions.json, suggestions.csv, contact_sheet.png, report.html")
    budget = doc["method"].get("budget")
    print(f"next: sim2real adapt --from {cfg.checkpoint} kshot_list={cfg.run_dir}/suggestions.json "
          f"k={budget or 10}" + (f"  (a TypiClust list for {budget} frames; another k: rerun with budget=K)"
                                 if budget else ""))
    return 0
