"""``sim2real compare``: source-only, real-only and every adaptation method on the same budget."""

from __future__ import annotations

import argparse
import logging

from sim2real.commands._common import add_config_arguments, config_from_args, flag_overrides

HELP = "run source-only, real-only and every adaptation method on the same budget"
DESCRIPTION = """\
Run the source-only model, a real-only fine-tune and each adaptation method (finetune, coral,
mmd, dann, adabn; combinations as "adabn+coral") on the same data, seed and budget, for each k in
`ks`, and write compare.md + compare.csv (real metrics on the held-out real test split in original
pixels, sim metrics, gap, wall time) into run_dir. Shared settings live under `adapt.`.

examples:
  sim2real compare --from runs/train/visp_cube/best.pt
  sim2real compare --from best.pt ks=[5,10,20] methods=[finetune,coral,adabn+coral]
  sim2real compare --from best.pt adapt.epochs=4 adapt.steps_per_epoch=10
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="checkpoint", metavar="CHECKPOINT",
                   help="sim-trained checkpoint (config key adapt.checkpoint)")
    add_config_arguments(p, "configs/compare.yaml")
    p.add_argument("--run-dir", help="output folder (config key run_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (adapt.progress=false)")
    p.add_argument("--no-wandb", action="store_true", help="no W&B runs (adapt.tracking.mode=disabled)")


def run(args: argparse.Namespace) -> int:
    from sim2real.adapt.compare import CompareConfig, run_compare

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra = flag_overrides(args, {"checkpoint": "adapt.checkpoint", "run_dir": "run_dir"},
                           {"no_wandb": "adapt.tracking.mode=disabled", "no_progress": "adapt.progress=false"})
    cfg = config_from_args(CompareConfig, args, extra)
    res = run_compare(cfg)
    print(res.markdown.read_text())
    print(f"{res.run_dir}: compare.md, compare.csv, metrics.jsonl")
    return 0
