"""``sim2real merge``: join dataset shards written with --shard/--num-shards into one dataset."""

from __future__ import annotations

import argparse

HELP = "join dataset shards written with --shard/--num-shards into one dataset"
DESCRIPTION = """\
Join the shard folders of one `sim2real generate` config into a single dataset, identical
(byte for byte, annotations.json included) to a single-machine run with the same seed.
Every shard must be complete; re-run a shard's generate command to finish it.

example:
  sim2real merge data/sim/part0 data/sim/part1 data/sim/part2 data/sim/part3 --out data/sim/big
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="shard folders written by generate --shard")
    p.add_argument("--out", required=True, help="merged dataset folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from sim2real.data.merge import merge_shards

    manifest = merge_shards(args.shards, args.out, progress=not args.no_progress)
    c = manifest["counts"]
    print(f"{args.out}: merged {len(args.shards)} shards -> {c['frames']} frames, {c['annotations']} annotations")
    return 0
