"""``sim2real adapt``: adapt a sim-trained checkpoint to the real camera."""

from __future__ import annotations

import argparse
import logging

from sim2real.commands._common import add_config_arguments, config_from_args, flag_overrides

HELP = "adapt a sim-trained checkpoint to real footage (finetune/coral/mmd/dann/adabn)"
DESCRIPTION = """\
Adapt a sim-trained checkpoint to a real camera with a few labelled real frames (k-shot split of
a COCO labels file) and unlabelled footage (video or frame folder; default: the labels' pool split).

Which real labels (real_labels):
  auto (default)  the built-in ViSP cube development labels ONLY when no unlabelled.source is given
                  (the demo); with your own unlabelled.source, no labels at all
  visp            the built-in ViSP cube labels, asked for by name
  <file.json>     your COCO labels (their image size must match your footage's frames)
  null            no labels
With your own footage and no labels: k=0 (label-free selection, no real metrics), else an error.

Objective: task loss on sim + task loss on labelled real + align_weight * alignment loss between
sim and real features (methods coral | mmd | dann, combinable with adabn / finetune), gradual
unfreezing (head -> last block -> earlier), low learning rate, L2-SP towards the starting weights,
early stopping on the real validation split (label-free MMD rule when k=0).

Before adapting, an input domain check compares sim and real images and aligns the pipeline
(grayscale, input aspect); findings go to <run_dir>/domain_check.md. Beside the adapted model the
run reports the source-only model and a real-only fine-tune and warns on negative transfer.

apply_domain_fixes=[brightness] applies the domain check's brightness advice itself (sim images
shifted by the measured luma difference; recorded in domain_check.json, input_pipeline.json, report).

Outputs in run_dir: config.yaml, run_info.json, metrics.jsonl, checkpoint.pt, best.pt, result.json,
report.md (+ report.html), real_frames.json (which real frames served what), splits.json,
unlabelled_footage.json, domain_check.{json,md}, input_pipeline.json, baselines/.

examples:
  sim2real adapt --from runs/train/visp_cube/best.pt
  sim2real adapt --from best.pt methods=[adabn,coral] k=5 align_weight=0.5
  sim2real adapt --from best.pt real_labels=labels.json real_image_root=frames/ unlabelled.source=run.mp4
  sim2real adapt --from best.pt k=0            # ViSP demo without labels in training: label-free selection
  sim2real adapt --from best.pt k=0 methods=[adabn] unlabelled.source=my_frames/   # your footage, no labels
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="checkpoint", metavar="CHECKPOINT",
                   help="sim-trained checkpoint (config key checkpoint)")
    add_config_arguments(p, "configs/adapt.yaml")
    p.add_argument("--run-dir", help="output folder (config key run_dir)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the source-only / real-only baselines (no negative-transfer check)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (config key progress=false)")
    p.add_argument("--no-wandb", action="store_true", help="no W&B run (tracking.mode=disabled)")


def run(args: argparse.Namespace) -> int:
    from sim2real.adapt.compare import results_table, table_meta, to_csv, to_markdown
    from sim2real.adapt.config import AdaptConfig
    from sim2real.adapt.selection import RULE_TEXT
    from sim2real.adapt.trainer import AdaptSession
    from sim2real.io import atomic_write_text

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra = flag_overrides(args, {"checkpoint": "checkpoint", "run_dir": "run_dir"},
                           {"no_baselines": "baselines=false", "no_wandb": "tracking.mode=disabled",
                            "no_progress": "progress=false"})
    cfg = config_from_args(AdaptConfig, args, extra)
    sess = AdaptSession(cfg)
    results = []
    if cfg.baselines:
        results += [sess.source_only(), sess.real_only()]
    res = sess.adapt(cfg.methods)
    results.append(res)
    rows = results_table(sess.data.k, results)
    meta = table_meta(cfg, sess.data, {}, sum(r.wall_s for r in results))
    atomic_write_text(sess.out / "report.md", to_markdown(rows, f"adapt {res.name}", meta))
    atomic_write_text(sess.out / "results.csv", to_csv(rows))
    if meta["real_labelled"]:
        print(f"real metrics on the labelled real TEST split ({meta['test_frames']}):")
        for r in rows:
            print(f"{r['method']:>22}: real test centre err {r.get('real/center_err_px_median')} px, "
                  f"IoU {r.get('real/box_iou_mean')}, PCK {r.get('real/pck@0.05')}")
    else:
        print(meta["real_metrics"])
    for line in sess.data.real_frames_lines()[1:-1]:
        print(f"real frames: {line}")
    print(f"model selection: {RULE_TEXT[res.selection]} (epoch {res.best_epoch} of {res.epochs_run})")
    for w in res.warnings:
        print(f"WARNING: {w}")
    print(f"{sess.out}: best.pt, metrics.jsonl, report.md, real_frames.json (which real frames served what)")
    return 0
