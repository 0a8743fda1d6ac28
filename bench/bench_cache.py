"""Time per training epoch with cached frozen-backbone features vs running the backbone every epoch.

Same data, same model, same process: ``sim2real.train.train`` twice on one synthetic shapes
dataset, once with ``cache=true`` (heads read the memory-mapped features) and once with
``cache=false`` (every batch goes through the frozen backbone), for each head.  Prints a table.
Target: an epoch >= 20x faster once cached.  A cached epoch is the head's own training, so the
speed-up is bounded by the head's cost: ``dense`` is the default dense head (stride 16, see
``docs/benchmarks.md``, "Heads"); ``dense_s8`` is the previous default (stride 8, 4x the cells),
kept for comparison; ``dense_grouped`` shares branches (3 instead of 6: cheaper, less precise).

On a shared machine use one thread (``OMP_NUM_THREADS=1``): with two threads on two busy cores,
small ops wait for a descheduled thread and the cached epochs' times become erratic.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_cache.py [--images 128] [--epochs 2] [--heads dense dense_s8 dense_grouped]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sim2real.config import load_config
from sim2real.io import read_jsonl
from sim2real.models import HeadConfig
from sim2real.train.config import TrainConfig
from sim2real.train.toy_data import write_shapes_dataset
from sim2real.train.trainer import train


# head name -> model overrides (everything else: the defaults of sim2real.models.HeadConfig)
HEADS = {"dense": ["model.head.type=dense"],
         "dense_s8": ["model.head.type=dense", "model.head.stride=8"],
         "dense_grouped": ["model.head.type=dense", "model.head.branches=grouped"]}


def run_once(root: Path, data: Path, name: str, cache: bool, head: str, args) -> dict:
    overrides = [f"datasets=[{data}]", f"run_dir={root / name}", f"cache_dir={root / 'cache'}",
                 f"cache={str(cache).lower()}", f"model.input_hw=[{args.input_h},{args.input_w}]",
                 *HEADS[head], f"model.backbone={args.backbone}", f"epochs={args.epochs}",
                 f"batch_size={args.batch_size}", "patience=0", "tracking.mode=disabled", "progress=false",
                 f"device={args.device}"]
    t0 = time.perf_counter()
    result = train(load_config(TrainConfig, None, overrides))
    wall = time.perf_counter() - t0
    epochs = [r["epoch_seconds"] for r in read_jsonl(root / name / "metrics.jsonl") if r.get("split") == "train"]
    return {"name": name, "head": head, "epoch_s": statistics.median(epochs), "first_epoch_s": epochs[0], "wall_s": wall,
            "build_s": sum(c["build_seconds"] for c in result.cache), "acc": result.best.get("acc"),
            "mbytes": sum(c["mbytes"] for c in result.cache), "hit": bool(result.cache) and all(c["hit"] for c in result.cache)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    # The default model input for a 4:3 camera (backbone size 224 fitted to the aspect ratio).
    p.add_argument("--input-h", type=int, default=224)
    p.add_argument("--input-w", type=int, default=288)
    p.add_argument("--heads", nargs="+", default=["dense", "dense_s8"], choices=list(HEADS),
                   help="heads to time (dense: the default CenterNet-style head; dense_s8: "
                        "the same at stride 8, the previous default; dense_grouped: 3 shared branches)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--target", type=float, default=20.0, help="speed-up to report as reached")
    args = p.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as td:
        root = Path(td)
        data = write_shapes_dataset(root / "data", num_images=args.images, size=(args.input_w, args.input_h), seed=0)
        for head in args.heads:
            base = run_once(root, data, f"{head}_backbone_every_epoch", False, head, args)
            first = run_once(root, data, f"{head}_cached", True, head, args)
            again = run_once(root, data, f"{head}_cached_reused", True, head, args)
            rows.append((base, first, again))

    d = HeadConfig()
    print(f"\nbench_cache: {args.images} images, input {args.input_h}x{args.input_w}, {args.backbone}, batch "
          f"{args.batch_size}, {args.epochs} epochs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}, {os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}; "
          f"dense head: stride {d.stride}, width {d.width}, {d.conv} 3x3 convs, branch depth {d.branch_depth}\n")
    print("| head | mode | cache build (s, once) | epoch (s, median) | speed-up per epoch | run wall (s) | val acc |")
    print("|---|---|---|---|---|---|---|")
    for base, first, again in rows:
        for r in (base, first, again):
            sp = base["epoch_s"] / max(r["epoch_s"], 1e-9)
            build = "reused" if r["hit"] else ("-" if r is base else f"{r['build_s']:.2f}")
            mode = r["name"][len(r["head"]) + 1:]
            print(f"| {r['head']} | {mode} | {build} | {r['epoch_s']:.3f} | {sp:.1f}x | {r['wall_s']:.1f} | "
                  f"{r['acc']:.3f} |")
    print()
    for base, first, _ in rows:
        speed = base["epoch_s"] / max(first["epoch_s"], 1e-9)
        verdict = "reached" if speed >= args.target else "NOT reached"
        print(f"{base['head']} head: {speed:.1f}x faster per epoch with the cache ({first['mbytes']:.1f} MiB cached; "
              f"target >= {args.target:g}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
