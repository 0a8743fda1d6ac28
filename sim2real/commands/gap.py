"""``sim2real gap``: measure the sim-to-real gap of a checkpoint on a sim and a real dataset."""

from __future__ import annotations

import argparse

from sim2real.commands._common import add_config_arguments, config_from_args, flag_overrides

HELP = "measure the sim-to-real gap of a checkpoint on a sim and a real dataset"
DESCRIPTION = """\
Score one checkpoint on a labelled sim set and a labelled real set (no training), in one pass per
set, and report the gap: sim/<metric>, real/<metric> and gap/<metric> (positive = real is worse:
sim - real for accuracy/IoU/PCK, real - sim for errors), plus distances between the sim and real
features (gap/feat_mmd, gap/feat_coral, gap/feat_frechet, gap/feat_pad; 0 = same distribution).

Writes into --out (default runs/gap/<checkpoint folder>_<real set>): metrics.jsonl, summary.json,
config.yaml, run_info.json and a self-contained report.html (frames with predictions, t-SNE of sim
vs real features, confusion matrices, error histograms) with its PNGs under report/; W&B offline
run under wandb/ unless --no-wandb (upload later with `wandb sync`).

examples:
  sim2real gap --checkpoint runs/train/sim/best.pt --sim data/sim/tabletop \\
      --real ../shared/real/visp_cube/dev_frames_000_099.coco.json \\
      --real-image-root /usr/share/visp-images-data/ViSP-images
  sim2real gap --checkpoint runs/adapt/coral/best.pt --sim data/sim/tabletop --real real.json \\
      --max-images 100 tracking.project=cube tracking.group=coral
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, None)
    p.add_argument("--checkpoint", help="model checkpoint (config key checkpoint)")
    p.add_argument("--sim", help="labelled sim dataset folder or COCO .json (config key sim)")
    p.add_argument("--sim-image-root", help="folder the sim COCO file_name entries are relative to")
    p.add_argument("--real", help="labelled real dataset folder or COCO .json (config key real)")
    p.add_argument("--real-image-root", help="folder the real COCO file_name entries are relative to")
    p.add_argument("--out", help="output run folder (default runs/gap/<checkpoint folder>_<real set>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier gap run in --out")
    p.add_argument("--max-images", type=int, help="images per set, evenly spaced (default 256; 0 = all)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-wandb", action="store_true", help="no W&B run (same as tracking.mode=disabled)")


_FLAGS = {"checkpoint": "checkpoint", "sim": "sim", "sim_image_root": "sim_image_root", "real": "real",
          "real_image_root": "real_image_root", "out": "out", "max_images": "max_images",
          "batch_size": "batch_size", "device": "device"}


def run(args: argparse.Namespace) -> int:
    from sim2real.gap.run import GapConfig, gap_table, run_gap

    extra = flag_overrides(args, _FLAGS, {"overwrite": "overwrite=true", "no_wandb": "tracking.mode=disabled"})
    cfg = config_from_args(GapConfig, args, extra)
    result = run_gap(cfg)
    n_sim, n_real = result.sim.metrics["n"], result.real.metrics["n"]
    print(f"gap of {cfg.checkpoint} ({n_sim} sim / {n_real} real images):")
    print(gap_table(result.record))
    print(f"report: {result.report.html_path}")
    return 0
