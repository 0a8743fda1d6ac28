"""``sim2real train``: train a backbone + task heads on a synthetic dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim2real.commands._common import add_config_arguments, config_from_args, flag_overrides

HELP = "train a backbone + task heads on a synthetic dataset"
DESCRIPTION = """\
Train an ImageNet-pretrained backbone + task heads (class, centre, box, keypoints) on one or more
COCO datasets written by `sim2real generate`.

With frozen backbone stages (model.trainable_blocks=N trains only the last N) the frozen part runs
once per image and its output is cached on disk (cache_dir, $SIM2REAL_CACHE, default
~/.cache/sim2real/features); later epochs and later runs read it back. Every epoch writes
metrics.jsonl, checkpoint.pt (resumable) and, when validation improves, best.pt into run_dir.

examples:
  sim2real train
  sim2real train datasets=[data/sim/a,data/sim/b] model.trainable_blocks=2 epochs=50
  sim2real train --resume runs/train/sim                 # continue a killed run
  sim2real train --compare-scratch                        # also train from random init, compare
  torchrun --nproc_per_node 2 -m sim2real train ...       # DistributedDataParallel (launch/train_sim_ddp.sh)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "configs/train_sim.yaml")
    p.add_argument("--data", action="append", metavar="DATASET",
                   help="dataset folder or COCO file; repeat for several (config key datasets)")
    p.add_argument("--run-dir", help="output run folder (config key run_dir)")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (its config.yaml, plus overrides) or, without a value, "
                        "the run_dir of --config")
    p.add_argument("--compare-scratch", action="store_true",
                   help="also train the same architecture from random init on the same budget and compare")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-wandb", action="store_true", help="no W&B run (config key tracking.mode=disabled)")
    p.add_argument("--real-val", metavar="DATASET",
                   help="labelled real set scored each epoch for the sim-to-real gap (config key real_val.data)")
    p.add_argument("--real-image-root", metavar="DIR", help="file_name root of --real-val (real_val.image_root)")


def run(args: argparse.Namespace) -> int:
    from sim2real.eval.metrics import CONTRACT_METRICS
    from sim2real.train.config import TrainConfig
    from sim2real.train.trainer import train

    extra = ["datasets=[" + ",".join(args.data) + "]"] if args.data else []
    extra += flag_overrides(args, {"real_val": "real_val.data", "real_image_root": "real_val.image_root"},
                            {"compare_scratch": "compare_scratch=true", "no_progress": "progress=false",
                             "no_wandb": "tracking.mode=disabled"})
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        args.overrides = [args.resume] + list(args.overrides)  # `--resume key=value`: no folder given
        args.resume = ""
    resume = args.resume is not None
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no config.yaml there (not a sim2real train run folder)")
        args.config = str(saved)
        extra.append(f"run_dir={run_dir}")
    elif args.run_dir:
        extra.append(f"run_dir={args.run_dir}")
    cfg = config_from_args(TrainConfig, args, extra)
    result = train(cfg, resume=resume)
    if result.best_epoch < 0:
        return 0  # not rank 0 under torchrun, or nothing left to do
    best = result.best
    parts = [f"{k}={best[k]:.4g}" for k in CONTRACT_METRICS if isinstance(best.get(k), float)]
    print(f"{cfg.run_dir}: best epoch {result.best_epoch + 1}/{result.epochs_run} ({', '.join(parts)}); "
          f"best.pt, checkpoint.pt, metrics.jsonl, report.md"
          + (f"; {result.num_corrupt} corrupt image(s) skipped" if result.num_corrupt else ""))
    if result.comparison:
        print(result.comparison)
    return 0
