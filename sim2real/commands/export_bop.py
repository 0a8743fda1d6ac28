"""``sim2real export-bop``: a generated dataset -> the BOP layout for pose tools (bop_toolkit)."""

from __future__ import annotations

import argparse

HELP = "write a generated dataset in the BOP layout for 6D pose tools"
DESCRIPTION = """\
Convert a dataset written by `sim2real generate` (annotations.json, images/, depth/, masks/) into
the BOP layout read by 6D pose tools (bop_toolkit, docs/bop_datasets_format.md):

  DIR/camera.json, DIR/models_info.json
  DIR/<split>/<scene_id>/rgb|depth|mask_visib/, scene_camera.json, scene_gt.json, scene_gt_info.json

BOP obj_id = the COCO category_id (class index + 1); every annotation is written, targets and
distractors. Frames of one generated scene form one BOP scene (im_id = view); translations are in
millimetres, depth PNGs are copied (already millimetres, depth_scale 1.0). models_info holds the
median 3D-box size of each class (no meshes are written). Details: docs/contracts.md, "BOP layout".

examples:
  sim2real export-bop data/sim/tabletop --out data/bop/tabletop
  sim2real export-bop data/sim/tabletop --out data/bop/tabletop --split train_pbr --overwrite
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET", help="generated dataset folder (or its annotations.json)")
    p.add_argument("--out", required=True, help="BOP dataset folder to write")
    p.add_argument("--split", default="train_pbr", help="split folder name (default: train_pbr)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR/<split>")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip (and count) annotations without a pose instead of stopping")


def run(args: argparse.Namespace) -> int:
    from sim2real.data.bop import export_bop

    s = export_bop(args.dataset, args.out, args.split, overwrite=args.overwrite, skip_invalid=args.skip_invalid)
    print(bop_summary_line(s))
    return 0


def bop_summary_line(s: dict) -> str:
    skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items() if v) or "none"
    varying = f"; sizes vary within {', '.join(s['varying_size'])} (models_info: median)" if s["varying_size"] else ""
    return (f"{s['out']}/{s['split']}: {s['frames']} frames, {s['instances']} instances, {s['scenes']} scenes, "
            f"{len(s['obj_ids'])} objects, skipped {s['skipped_total']} ({skipped}){varying}")
