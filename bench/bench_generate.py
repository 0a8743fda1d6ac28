"""Benchmark ``sim2real generate``: frames/s per image size and worker count, next to the renderer.

Columns, all measured in this run on the same scene (``configs/scenes/default.yaml`` at the size)
and the same frames (scene groups of ``views_per_scene`` views, as the generator renders them):

* ``raw getCameraImage``: ``env.unwrapped.render_raw()`` right after each frame's reset — one bare
  renderer call with that frame's camera, light and shadows: the ceiling for one process.
* ``env``: ``env.reset(seed=..., options={"scene_seed": ...})`` per frame (a scene build every
  ``views_per_scene`` frames, then view sampling, render, labels, image noise), no files.
* ``generate W=k``: the full generator (env + PNG/depth/mask/label files), steady state: per
  worker, frames after its first scene group over the time they took, summed over workers.
  Process start, imports, env construction and the first scene are the ``warm-up`` column.

The machine this runs on may be shared: wall-clock rates then depend on what else runs.  A second
table gives the same quantities per second of this process's (or each worker's) own CPU time,
which load on other cores changes much less; ``load avg`` says how busy the machine was.

Targets: generate W=1 >= 0.8x raw; W=2 >= 1.8x W=1.  Usage::

    OMP_NUM_THREADS=1 python bench/bench_generate.py [key=value ...] [--frames 384] [--sizes 128 224]
        [--workers 1 2]      # key=value: generate overrides (first), e.g. views_per_scene=16
    OMP_NUM_THREADS=1 python bench/bench_generate.py --stages   # CPU ms per frame of each stage
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim2real.config import load_config  # noqa: E402
from sim2real.data.generate import (GenerateConfig, frame_seed, generate, load_scene, make_env,  # noqa: E402
                                    scene_seed)


def _cfg(out: str, size: int, frames: int, workers: int, extra: list[str]) -> GenerateConfig:
    return load_config(GenerateConfig, ROOT / "configs/generate.yaml",
                       [f"out={out}", f"num_frames={frames}", f"workers={workers}", "progress=false",
                        "grid.enabled=false", f"scene_file={ROOT / 'configs/scenes/default.yaml'}",
                        f"scene.camera.width={size}", f"scene.camera.height={size}", *extra])


def bench_env(cfg: GenerateConfig, raw_repeats: int = 3) -> dict[str, float]:
    """Raw getCameraImage and env frames/s (wall and CPU) over the config's frames, in this process."""
    env = make_env(cfg.env_id, load_scene(cfg), cfg.renderer)
    v = cfg.views_per_scene

    def reset(i: int):
        return env.reset(seed=frame_seed(cfg.seed, i), options={"scene_seed": scene_seed(cfg.seed, i // v)})

    try:
        reset(cfg.num_frames + v)  # warm-up (imports, caches) on a scene outside the measured ones
        wall = {"env": 0.0, "raw": 0.0}
        cpu = {"env": 0.0, "raw": 0.0}
        for i in range(cfg.num_frames):
            t0, c0 = time.perf_counter(), time.process_time()
            reset(i)
            t1, c1 = time.perf_counter(), time.process_time()
            for _ in range(raw_repeats):
                env.unwrapped.render_raw()
            wall["env"] += t1 - t0
            cpu["env"] += c1 - c0
            wall["raw"] += (time.perf_counter() - t1) / raw_repeats
            cpu["raw"] += (time.process_time() - c1) / raw_repeats
        n = cfg.num_frames
        return {"raw": n / wall["raw"], "env": n / wall["env"], "raw_cpu": n / cpu["raw"], "env_cpu": n / cpu["env"]}
    finally:
        env.close()


def bench_stages(cfg: GenerateConfig) -> dict[str, float]:
    """CPU ms per frame of each stage of an in-process generator run (exclusive times).

    Wraps the env's and writer's stage functions with ``time.process_time``; the first scene
    group is a warm-up and is not counted.  Slightly slower than an unwrapped run.
    """
    import functools

    import sim2real.data.coco_writer as cw
    import sim2real_envs.postprocess as pp
    import sim2real_envs.tabletop as tt
    from sim2real.data.generate import FrameRenderer, RenderJob

    stages = {
        (tt.TabletopEnv, "_get_image"): "getCameraImage (frame + visibility crops)",
        (tt.TabletopEnv, "_build_scene"): "scene build (share per frame)",
        (tt.TabletopEnv, "_sample_view"): "view sampling (camera, light)",
        (tt.TabletopEnv, "_observe"): "observation arrays (ids, depth, rgb)",
        (tt.TabletopEnv, "_unoccluded_areas"): "visibility test",
        (tt, "frame_labels"): "labels (boxes, poses, keypoints)",
        (pp, "apply"): "image post-processing (albumentations)",
        (cw, "encode_image"): "PNG/JPEG encode: image",
        (cw, "encode_uint16_png"): "PNG encode: depth + mask",
        (cw, "depth_to_mm"): "depth to mm",
        (cw, "rle_of"): "COCO RLE",
        (cw, "atomic_write_bytes"): "file writes (4 atomic renames)",
        (cw, "write_frame"): "label dict, sha256, JSON",
        (FrameRenderer, "render"): "generator loop, gym reset",
    }
    spent: dict[str, float] = dict.fromkeys(stages.values(), 0.0)
    stack: list[float] = []
    saved = []

    def timed(fn, key):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            t0 = time.process_time()
            stack.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                dt, inner = time.process_time() - t0, stack.pop()
                spent[key] += dt - inner
                if stack:
                    stack[-1] += dt
        return wrapper

    for (owner, name), key in stages.items():
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, timed(getattr(owner, name), key))
    out = Path(cfg.out)
    job = RenderJob(str(out), cfg.env_id, load_scene(cfg), cfg.renderer, cfg.seed, cfg.views_per_scene,
                    cfg.image_format, cfg.jpeg_quality, cfg.png_compression)
    try:
        renderer = FrameRenderer(job)
        try:
            v = cfg.views_per_scene
            for f in range(cfg.num_frames, cfg.num_frames + v):  # warm-up group, outside the measured frames
                renderer.render(f)
            for key in spent:
                spent[key] = 0.0
            c0 = time.process_time()
            for f in range(cfg.num_frames):
                renderer.render(f)
            total = time.process_time() - c0
        finally:
            renderer.close()
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
    n = cfg.num_frames
    return {**{k: 1e3 * t / n for k, t in spent.items()}, "total": 1e3 * total / n}


def bench_generate(cfg: GenerateConfig) -> dict[str, float]:
    """Steady frames/s (wall; per worker CPU second), warm-up seconds, wall-clock frames/s with warm-up."""
    run = generate(cfg)["run"]
    nan = float("nan")
    return {"steady": run["steady_frames_per_s"] or nan, "cpu": run["steady_frames_per_cpu_s"] or nan,
            "warmup": run["warmup_s"] or nan, "wall": run["frames_per_s"] or nan}


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=384,
                    help="frames per measurement: enough scene groups per worker that the texture "
                    "pool (made on first use) is mostly warm, as in a real dataset run")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stages", action="store_true",
                    help="instead: CPU ms per frame of each generator stage (W=1, in this process)")
    ap.add_argument("overrides", nargs="*", help="extra generate config overrides, e.g. views_per_scene=4")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.stages:
        return print_stages(args)

    rows = []
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        for size in args.sizes:
            base = _cfg(f"{tmp}/env", size, args.frames, 1, args.overrides)
            env = bench_env(base)
            gen = {w: bench_generate(_cfg(f"{tmp}/gen_{size}_w{w}", size, args.frames, w, args.overrides))
                   for w in args.workers}
            rows.append((size, env, gen, _load()))
            print(f"{size}x{size}: raw {env['raw']:.1f}/s, env {env['env']:.1f}/s, "
                  + ", ".join(f"W={w} {g['steady']:.1f}/s (warm-up {g['warmup']:.1f} s, wall incl. warm-up "
                              f"{g['wall']:.1f}/s)" for w, g in gen.items()) + f"; load {rows[-1][-1]}",
                  file=sys.stderr)

    ws = args.workers
    views = base.views_per_scene
    print(f"\ncpu cores: {os.cpu_count()}, frames per measurement: {args.frames}, views_per_scene: {views}, "
          f"overrides: {' '.join(args.overrides) or 'none'}, load avg before: {load_before}\n")
    head = (["size", "raw getCameraImage (f/s)", f"env, {views} views/scene (f/s)"]
            + [f"generate W={w} steady (f/s)" for w in ws] + [f"warm-up W={w} (s)" for w in ws]
            + ["W=1 / raw"] + [f"W={w} / W=1" for w in ws if w != 1] + ["load avg 1/5/15 min after"])
    _table(head, [[f"{size}x{size}", f"{env['raw']:.1f}", f"{env['env']:.1f}"]
                  + [f"{gen[w]['steady']:.1f}" for w in ws] + [f"{gen[w]['warmup']:.1f}" for w in ws]
                  + [_ratio(gen.get(1, {}).get("steady"), env["raw"])]
                  + [_ratio(gen[w]["steady"], gen.get(1, {}).get("steady")) for w in ws if w != 1] + [load]
                  for size, env, gen, load in rows])
    print("\nper second of own CPU time (one core; generate: mean over workers):\n")
    head = (["size", "raw getCameraImage (f/CPU-s)", "env (f/CPU-s)"]
            + [f"generate W={w} (f/CPU-s per worker)" for w in ws] + ["W=1 / raw (CPU)"])
    _table(head, [[f"{size}x{size}", f"{env['raw_cpu']:.1f}", f"{env['env_cpu']:.1f}"]
                  + [f"{gen[w]['cpu']:.1f}" for w in ws] + [_ratio(gen.get(1, {}).get("cpu"), env["raw_cpu"])]
                  for size, env, gen, load in rows])
    print("\ntargets: W=1 / raw >= 0.8x, W=2 / W=1 >= 1.8x")
    return 0


def print_stages(args) -> int:
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        cols = {}
        for size in args.sizes:
            cfg = _cfg(f"{tmp}/stages_{size}", size, args.frames, 1, args.overrides)
            raw = bench_env(cfg)["raw_cpu"]
            cols[size] = {**bench_stages(cfg), "raw getCameraImage alone": 1e3 / raw}
    keys = [k for k in next(iter(cols.values())) if k not in ("total", "raw getCameraImage alone")]
    keys.sort(key=lambda k: -max(c[k] for c in cols.values()))
    print(f"\nCPU ms per frame, W=1, {args.frames} frames after a warm-up scene group, overrides: "
          f"{' '.join(args.overrides) or 'none'}\n")
    _table(["stage"] + [f"{s}x{s}" for s in cols],
           [[k] + [f"{c[k]:.2f}" for c in cols.values()] for k in keys]
           + [["**total**"] + [f"**{c['total']:.2f}**" for c in cols.values()],
              ["raw getCameraImage alone (same frames)"] + [f"{c['raw getCameraImage alone']:.2f}"
                                                            for c in cols.values()]])
    return 0


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def _table(head: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
