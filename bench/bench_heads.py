"""Which dense-head options and model input localise best: stride 8 vs 16, conv kind, width, branches,
aspect kept vs squashed (the single-object global head is gone since issue 12: the detection head is
the per-class CenterNet head).

End to end through the CLI, on the digital twin of the real ViSP cube footage:

1. ``sim2real generate`` a training set and a separate sim validation set (other seed) of
   ``configs/scenes/visp_cube.yaml`` (320x240; skipped when the folder already holds a finished set);
2. ``sim2real train`` every candidate on the same data with the same budget and training seed(s)
   (frozen backbone, cached features; best epoch by sim-val median centre error);
3. ``sim2real evaluate`` its best.pt on the sim val set and on the REAL validation frames 48-67 of
   the ViSP cube (the stored val split of the labelled frames 0-99; frames 70-99 are the test split,
   kept for the final adaptation table, and frames 100-217 are never touched).

Prints a markdown table, one row per candidate and training seed, and with several ``--seeds`` the
mean over seeds (also written, with all numbers, to ``<out>/bench_heads.md`` / ``.json``).
Source-only: no adaptation, so real errors are far above sim ones.  Centre errors are medians in
the pixels of each set's images: 320x240 for sim, 640x480 for real.  A candidate whose run is
complete under ``<out>/runs/<name>/seed<seed>`` with the same settings is reused (``--fresh`` redoes it).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_heads.py [--frames 400] [--val-frames 100]
        [--epochs 20] [--batch-size 16] [--seeds 0 1] [--out runs/heads] [--only dense_s16 dense_s8] [--fresh]
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_heads.py --head-cost   # what each head costs per epoch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim2real.data.real_visp import VISP_CUBE_SPLIT_DEFAULTS, visp_cube_default_splits, visp_image_root  # noqa: E402
from sim2real.io import atomic_write_json, atomic_write_text, read_jsonl  # noqa: E402
from sim2real.models import read_checkpoint_meta  # noqa: E402

DENSE = "model.head.type=dense"


def dense(stride: int, conv: str = "full", width: int = 64, depth: int = 1, branches: str = "separate"
          ) -> tuple[str, list[str]]:
    """(label, overrides) of a dense head."""
    label = f"dense s{stride} {conv} w{width} {branches}" + (f" depth {depth}" if depth != 1 else "")
    return label, [DENSE, f"model.head.stride={stride}", f"model.head.conv={conv}", f"model.head.width={width}",
                   f"model.head.branch_depth={depth}", f"model.head.branches={branches}"]


S240 = ("240x320", ["model.input_hw=[240,320]"])                 # the 640x480 camera at half size: aspect kept
S224 = ("224x304", ["model.input_short_side=224"])               # the backbone's 224, aspect kept (the default)
SQUASH = ("224x224 squash", ["model.input_hw=[224,224]", "model.resize=stretch"])  # the ImageNet square


def candidate(head: tuple[str, list[str]], size: tuple[str, list[str]]) -> tuple[str, str, list[str]]:
    return head[0], size[0], head[1] + size[1]


# name -> (head label, input label, train overrides). Dense: output stride s8/s16; full or separable
# 3x3 convs; w = channels; separate / kp_shared / grouped / shared = 6 / 4 / 3 / 1 output branches
# (sim2real.models.heads.BRANCH_GROUPS); depth = 3x3 convs per branch.
CANDIDATES: dict[str, tuple[str, str, list[str]]] = {
    "dense_s8": candidate(dense(8), S240),
    "dense_s16": candidate(dense(16), S240),
    "dense_s16_sep": candidate(dense(16, "separable"), S240),
    "dense_s8_224": candidate(dense(8), S224),
    "dense_s16_224": candidate(dense(16), S224),
    "dense_s16_224sq": candidate(dense(16), SQUASH),
    "dense_s16_w48_224": candidate(dense(16, width=48), S224),
    "dense_s16_w32_224": candidate(dense(16, width=32), S224),
    "dense_s16_sep_224": candidate(dense(16, "separable"), S224),
    "dense_s16_kp_shared_224": candidate(dense(16, branches="kp_shared"), S224),
    "dense_s16_grouped_224": candidate(dense(16, branches="grouped"), S224),
    "dense_s16_shared_224": candidate(dense(16, branches="shared"), S224),
}


def cli(*args: str, log: Path) -> None:
    """Run ``python -m sim2real ...``; its output goes to ``log``; a failure stops the benchmark."""
    cmd = [sys.executable, "-m", "sim2real", *args]
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"bench_heads: `{' '.join(args[:1])}` failed (exit {rc}); see {log}")


def finished_dataset(path: Path, frames: int, seed: int) -> bool:
    try:
        m = json.loads((path / "manifest.json").read_text())
        return m["counts"]["frames"] == frames and m["seed"] == seed
    except (OSError, ValueError, KeyError):
        return False


def generate(out: Path, frames: int, seed: int, args, log: Path) -> Path:
    if not finished_dataset(out, frames, seed):
        cli("generate", "--config", "configs/generate.yaml", "--no-progress", "--workers", str(args.workers),
            f"scene_file={args.scene}", f"num_frames={frames}", f"seed={seed}", f"out={out}", log=log)
    return out


def real_val_labels(out: Path, labels: Path) -> tuple[Path, list[int]]:
    """COCO file of the real validation split only (frames 48-67), for ``sim2real evaluate``."""
    splits = visp_cube_default_splits(k=0, labels=labels)
    frames = splits.frame_indices("val")
    if set(frames) & set(splits.frame_indices("test")) or max(frames) >= 100:
        raise SystemExit(f"bench_heads: real val frames {frames} overlap the test split or leave frames 0-99")
    keep = set(splits["val"])
    coco = json.loads(labels.read_text())
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    path = out / "real_val_frames_{:03d}_{:03d}.coco.json".format(min(frames), max(frames))
    atomic_write_json(path, coco)
    return path, frames


def run_candidate(name: str, overrides: list[str], seed: int, data: Path, val: Path, real: Path, args,
                  log: Path) -> dict:
    run_dir = args.out / "runs" / name / f"seed{seed}"
    settings = {"overrides": overrides, "data": str(data), "val": str(val), "real": str(real), "epochs": args.epochs,
                "batch_size": args.batch_size, "seed": seed}
    result_file = run_dir / "bench_result.json"
    if not args.fresh and result_file.is_file():
        old = json.loads(result_file.read_text())
        if old.get("settings") == settings:
            return old
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished or outdated run of this benchmark
    t0 = time.perf_counter()
    cli("train", "--config", "configs/train_sim.yaml", "--no-progress", f"datasets=[{data}]", f"val_dataset={val}",
        f"run_dir={run_dir}", f"cache_dir={args.out / 'cache'}", f"epochs={args.epochs}",
        f"batch_size={args.batch_size}", f"seed={seed}", "patience=0", "monitor=center_err_px_median",
        "model.trainable_blocks=0", "views=1", "tracking.mode=disabled", *overrides, log=log)
    train_wall = time.perf_counter() - t0
    ckpt = run_dir / "best.pt"
    cli("evaluate", "--checkpoint", str(ckpt), "--data", str(val), "--name", "sim_val", log=log)
    cli("evaluate", "--checkpoint", str(ckpt), "--data", str(real), "--image-root", str(args.image_root),
        "--name", "real_val", log=log)
    rows = list(read_jsonl(run_dir / "metrics.jsonl"))
    epochs = [r["epoch_seconds"] for r in rows if r.get("split") == "train"]
    info = json.loads((run_dir / "run_info.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    res = {"settings": settings, "input_hw": None, "best_epoch": summary.get("best_epoch"),
           "train_seconds": summary.get("train_seconds"), "train_wall_seconds": train_wall,
           "epoch_seconds_median": statistics.median(epochs),
           "cache_build_seconds": sum(c.get("build_seconds", 0.0) for c in info.get("feature_cache", []) if not c["hit"])}
    for split in ("sim_val", "real_val"):
        m = json.loads((run_dir / f"eval_{split}.json").read_text())["metrics"]
        res[split] = {k: m.get(k) for k in ("n", "center_err_px_median", "center_err_px_mean", "box_iou_mean",
                                            "pck@0.05", "acc")}
    res["input_hw"] = list(read_checkpoint_meta(ckpt)["input_hw"])
    atomic_write_json(result_file, res, indent=2)
    return res


def head_cost(names: list[str], input_hw=(224, 288), images: int = 128, batch: int = 32) -> dict[str, float]:
    """Seconds to train each candidate's head on ``images`` cached-feature samples (forward, loss,
    backward, AdamW step; best of 3), all in this process: what a cached epoch spends on the head."""
    import torch

    from sim2real.config import load_config
    from sim2real.models import ModelConfig, PerceptionModel, build_backbone

    torch.manual_seed(0)
    bb = build_backbone("efficientnet_lite0")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *input_hw, generator=g)
    # One cube per image, as padded instance targets (docs/contracts.md, "Instances"): M = 1.
    c = torch.rand(batch, 1, 2, generator=g) * torch.tensor([input_hw[1], input_hw[0]]) * 0.8 + 20
    kp = torch.cat([c[:, :, None] + 10 * torch.randn(batch, 1, 8, 2, generator=g),
                    torch.full((batch, 1, 8, 1), 2.0)], -1)
    t = {"label": torch.zeros(batch, 1).long(), "center": c, "box": torch.cat([c - 20, c + 20], -1), "keypoints": kp,
         "ignore": torch.zeros(batch, 1, dtype=torch.bool), "has_loc": torch.ones(batch, dtype=torch.bool)}
    out = {}
    for name in names:
        heads = [o.removeprefix("model.") for o in CANDIDATES[name][2] if o.startswith("model.head.")]
        model = PerceptionModel(bb, ["cube"], load_config(ModelConfig, None, heads).head, input_hw).freeze_backbone()
        with torch.no_grad():
            feats = model.eval().frozen_part(x)
        model.train()
        opt = torch.optim.AdamW(model.param_groups(1e-3), fused=True)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(images // batch):
                loss, _ = model.compute_loss(model.forward_from_cut(feats), t)
                opt.zero_grad()
                loss.backward()
                opt.step()
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def row(name: str, seed: str, r: dict) -> str:
    head, inp, _ = CANDIDATES[name]
    s, q = r["sim_val"], r["real_val"]
    return (f"| {name} | {head} | {inp} | {seed} | {fmt(s['center_err_px_median'], '.2f')} | "
            f"{fmt(s['box_iou_mean'], '.3f')} | {fmt(q['center_err_px_median'], '.1f')} | "
            f"{fmt(q['box_iou_mean'], '.3f')} | {fmt(q['pck@0.05'], '.3f')} | "
            f"{fmt(r['epoch_seconds_median'], '.2f')} | {fmt(r['train_seconds'] - r['cache_build_seconds'], '.0f')} |")


def mean_result(runs: list[dict]) -> dict:
    def avg(get):
        vals = [get(r) for r in runs]
        return None if any(v is None for v in vals) else statistics.fmean(vals)
    out = {split: {k: avg(lambda r, s=split, k=k: r[s][k]) for k in ("center_err_px_median", "box_iou_mean", "pck@0.05")}
           for split in ("sim_val", "real_val")}
    out.update(epoch_seconds_median=avg(lambda r: r["epoch_seconds_median"]),
               train_seconds=avg(lambda r: r["train_seconds"]), cache_build_seconds=avg(lambda r: r["cache_build_seconds"]))
    return out


def table(results: dict[str, dict[int, dict]]) -> str:
    lines = ["| candidate | head | input (model px) | seed | sim centre err px (320x240, median) | sim box IoU | "
             "real-val centre err px (640x480, median) | real-val box IoU | real-val PCK@0.05 | "
             "epoch s (cached) | train s (w/o cache build) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_seed in results.items():
        for seed, r in sorted(by_seed.items()):
            lines.append(row(name, str(seed), r))
        if len(by_seed) > 1:
            lines.append(row(name, "**mean**", mean_result(list(by_seed.values()))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "heads", help="datasets, runs, cache and tables")
    p.add_argument("--scene", default="configs/scenes/visp_cube.yaml")
    p.add_argument("--frames", type=int, default=400, help="sim training frames")
    p.add_argument("--val-frames", type=int, default=100, help="sim validation frames (data seed + 1)")
    p.add_argument("--workers", type=int, default=1, help="generator worker processes")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--data-seed", type=int, default=0, help="generator seed of the training set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (one run per candidate each)")
    p.add_argument("--only", nargs="+", choices=list(CANDIDATES), help="candidates to run (default: all)")
    p.add_argument("--fresh", action="store_true", help="retrain candidates even when a finished run exists")
    p.add_argument("--real-labels", type=Path, default=None, help="ViSP cube labels of frames 0-99 (default: found "
                   "as sim2real.data.real_visp does)")
    p.add_argument("--image-root", type=Path, default=visp_image_root())
    p.add_argument("--head-cost", action="store_true", help="only time each candidate head's training on cached "
                   "features (128 samples at 224x288, this process, no data needed) and exit")
    args = p.parse_args(argv)
    if args.head_cost:
        import torch
        names = args.only or list(CANDIDATES)
        cost = head_cost(names)
        print(f"head training s per 128 cached samples (224x288, batch 32, {torch.get_num_threads()} threads, "
              f"load avg {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}):\n")
        print("| candidate | head | s / 128 samples | vs dense_s16 |\n|---|---|---|---|")
        ref = cost.get("dense_s16")
        for n, v in cost.items():
            print(f"| {n} | {CANDIDATES[n][0]} | {v:.3f} | {fmt(v / ref if ref else None, '.2f')}x |")
        return 0
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "bench_heads.log"

    from sim2real.data.real_visp import visp_cube_labels_path
    labels = args.real_labels or visp_cube_labels_path()
    data = generate(args.out / "visp_sim", args.frames, args.data_seed, args, log)
    val = generate(args.out / "visp_sim_val", args.val_frames, args.data_seed + 1, args, log)
    real, frames = real_val_labels(args.out, labels)

    names = args.only or list(CANDIDATES)
    results: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:
        for name in names:
            t0 = time.perf_counter()
            results.setdefault(name, {})[seed] = run_candidate(name, CANDIDATES[name][2], seed, data, val, real,
                                                               args, log)
            print(f"{name} seed {seed}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    import torch
    head = (f"bench_heads: sim {args.frames} train + {args.val_frames} val frames ({args.scene}, 320x240); real val = "
            f"ViSP cube frames {min(frames)}-{max(frames)} ({len(frames)} images, 640x480, split "
            f"{VISP_CUBE_SPLIT_DEFAULTS}); efficientnet_lite0 frozen, cached features, {args.epochs} epochs, batch "
            f"{args.batch_size}, training seeds {args.seeds}, best epoch by sim-val centre error; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{time.strftime('%Y-%m-%d')}")
    means = {n: mean_result(list(by_seed.values())) for n, by_seed in results.items()}
    best = {split: min(means, key=lambda n: means[n][split]["center_err_px_median"] or float("inf"))
            for split in ("sim_val", "real_val")}
    md = (head + "\n\n" + table(results) + "\n\n" + f"Lowest median centre error (mean over seeds): sim val `{best['sim_val']}`, "
          f"real val `{best['real_val']}`.\n")
    print("\n" + md)
    atomic_write_text(args.out / "bench_heads.md", md)
    atomic_write_json(args.out / "bench_heads.json", {"header": head, "results": results}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
