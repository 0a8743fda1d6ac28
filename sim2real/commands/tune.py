"""``sim2real tune``: attribute the sim-to-real gap to randomization knobs, tune the scene, verify."""

from __future__ import annotations

import argparse

from sim2real.commands._common import (
    add_config_arguments,
    config_from_args,
    flag_overrides,
)

HELP = "find which randomization causes the sim-to-real gap, tune the scene to close it, verify"
DESCRIPTION = """\
Close the loop between a scene and a camera, from unlabelled real footage:

1. attribution: render a small probe of the scene with each randomization group switched off or
   narrowed (textures, lighting, shadows, camera pose, intrinsics, distractors, noise, blur, JPEG,
   colour jitter, grayscale), same seeds in every probe, and measure how the frozen backbone's
   feature gap to the footage moves (gap/feat_frechet, gap/feat_mmd): a ranked table and a plot of
   which groups close the gap and which open it, checked against the input domain check;
2. search: a seeded TPE search (optuna; SQLite study in the run folder, so a killed run resumes
   when re-run) over continuous ranges and probabilities minimising the gap; writes
   <scene>.tuned.yaml and a diff into --out and measures both scenes on a fresh held-out render;
3. verify (verify.enabled=true): train source-only on the original and the tuned scene with the
   same budget, one model per training seed (verify.seeds), and score all on the real labelled
   frames (the only place labels are read); the verdict compares the tuned scene's seed mean with
   the original's seed spread on the validation split and says plainly when it is not better.

Writes into --out: attribution.{json,md,png}, search.{db,json,png}, the tuned YAML + diff,
holdout.json, verify.json, tune.json, report.html, metrics.jsonl, summary.json, config.yaml and a
W&B offline run (unless --no-wandb). Probe features are cached (cache_dir), so a re-run is fast.

examples:
  sim2real tune                                              # the ViSP twin vs mbt/cube frames 0-99
  sim2real tune --scene my_scene.yaml --footage clip.mp4 --out runs/tune/mine search.trials=40
  sim2real tune verify.enabled=true verify.frames=800 verify.epochs=10
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "configs/tune.yaml")
    p.add_argument("--scene", help="scene YAML to tune (config key scene_file)")
    p.add_argument("--footage", help="unlabelled real footage: a video, a folder of frames, or 'visp' "
                                     "(mbt/cube frames 0-99) (config key footage)")
    p.add_argument("--out", help="run folder (config key out); an existing search there resumes")
    p.add_argument("--overwrite", action="store_true", help="start over in --out")
    p.add_argument("--trials", type=int, help="search budget in completed trials (config key search.trials)")
    p.add_argument("--minutes", type=float, help="search budget in minutes (config key search.minutes)")
    p.add_argument("--verify", action="store_true", help="also train on both scenes and score on real labels")
    p.add_argument("--no-wandb", action="store_true", help="no W&B run (same as tracking.mode=disabled)")


_FLAGS = {"scene": "scene_file", "footage": "footage", "out": "out", "trials": "search.trials",
          "minutes": "search.minutes"}


def run(args: argparse.Namespace) -> int:
    from sim2real.tune.config import TuneConfig
    from sim2real.tune.run import run_tune

    extra = flag_overrides(args, _FLAGS, {"overwrite": "overwrite=true", "verify": "verify.enabled=true",
                                          "no_wandb": "tracking.mode=disabled"})
    cfg = config_from_args(TuneConfig, args, extra)
    result = run_tune(cfg)
    print(f"report: {result.report}")
    return 0
