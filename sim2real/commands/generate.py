"""``sim2real generate``: render a domain-randomized synthetic dataset (COCO) with W workers."""

from __future__ import annotations

import argparse

from sim2real.commands._common import add_config_arguments, config_from_args, flag_overrides

HELP = "render a domain-randomized synthetic dataset (COCO) with W workers"
DESCRIPTION = """\
Render a synthetic dataset: images, depth (uint16 mm), instance masks, COCO annotations.json,
manifest.json and a samples.png grid; format=bop also writes the BOP layout under <out>/bop/
(the same as `sim2real export-bop <out> --out <out>/bop`).

Frames come in groups of views_per_scene (default 8) views of one randomized scene: frame i
shows scene i // V (objects, looks, settled physics) from a new camera pose, light and image
noise; views_per_scene=1 gives a new scene per frame. Frame i depends only on (seed, i) and V:
any worker count gives the same bytes. Re-running the same command after an interruption
finishes the dataset (frames whose files match the hashes in their labels are kept). Shards
(--shard k --num-shards n) render scene groups k, k+n, k+2n, ...; join them with `sim2real merge`.

examples:
  sim2real generate --workers 2
  sim2real generate num_frames=1000 scene.camera.width=128 scene.camera.height=128 --out data/sim/big
  sim2real generate views_per_scene=1 --out data/sim/one_view   # a new scene every frame
  sim2real generate format=bop --out data/sim/bop_too   # also the BOP layout in data/sim/bop_too/bop/
  sim2real generate --shard 0 --num-shards 4 --out data/sim/part0   # on machine 0, and so on
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "configs/generate.yaml")
    p.add_argument("--out", help="output dataset folder (config key out)")
    p.add_argument("--workers", type=int, help="worker processes (config key workers)")
    p.add_argument("--num-frames", type=int, help="frames in the whole dataset (config key num_frames)")
    p.add_argument("--seed", type=int, help="dataset seed (config key seed)")
    p.add_argument("--shard", type=int, help="index of the shard this run renders (config key shard)")
    p.add_argument("--num-shards", type=int, help="number of shards (config key num_shards)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from sim2real.data.generate import GenerateConfig, generate

    extra = flag_overrides(args, {k: k for k in ("out", "workers", "num_frames", "seed", "shard", "num_shards")},
                           {"no_progress": "progress=false"})
    cfg = config_from_args(GenerateConfig, args, extra)
    manifest = generate(cfg)
    c, run_info = manifest["counts"], manifest.get("run", {})
    rate = run_info.get("frames_per_s")
    print(f"{cfg.out}: {c['frames']} frames, {c['annotations']} annotations "
          f"({run_info.get('rendered_now', 0)} rendered now, {run_info.get('resumed_frames', 0)} kept"
          + (f", {rate:.2f} frames/s" if rate else "") + ")")
    if "bop" in manifest:
        from sim2real.commands.export_bop import bop_summary_line

        print(f"BOP layout: {bop_summary_line(manifest['bop'])}")
    return 0
