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

Targets: generate W=1 >= 0.8x raw; W=2 >= 1.8x W=1.  Usage::

    OMP_NUM_THREADS=1 python bench/bench_generate.py [--frames 96] [--sizes 128 224] [--workers 1 2]
        [key=value generate overrides, e.g. views_per_scene=4 renderer=egl]
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


def bench_env(cfg: GenerateConfig, raw_repeats: int = 3) -> tuple[float, float]:
    """(raw getCameraImage frames/s, env frames/s) over the config's frames, in this process."""
    env = make_env(cfg.env_id, load_scene(cfg), cfg.renderer)
    v = cfg.views_per_scene

    def reset(i: int):
        return env.reset(seed=frame_seed(cfg.seed, i), options={"scene_seed": scene_seed(cfg.seed, i // v)})

    try:
        reset(cfg.num_frames + v)  # warm-up (imports, caches) on a scene outside the measured ones
        t_env = t_raw = 0.0
        for i in range(cfg.num_frames):
            t0 = time.perf_counter()
            reset(i)
            t1 = time.perf_counter()
            for _ in range(raw_repeats):
                env.unwrapped.render_raw()
            t_env += t1 - t0
            t_raw += (time.perf_counter() - t1) / raw_repeats
        return cfg.num_frames / t_raw, cfg.num_frames / t_env
    finally:
        env.close()


def bench_generate(cfg: GenerateConfig) -> tuple[float, float, float]:
    """(steady frames/s, warm-up seconds, wall-clock frames/s including warm-up)."""
    run = generate(cfg)["run"]
    return run["steady_frames_per_s"] or float("nan"), run["warmup_s"] or float("nan"), run["frames_per_s"]


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=96, help="frames per measurement (>= 4 scene groups per worker)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("overrides", nargs="*", help="extra generate config overrides, e.g. views_per_scene=4")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    rows = []
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        for size in args.sizes:
            base = _cfg(f"{tmp}/env", size, args.frames, 1, args.overrides)
            raw, env_rate = bench_env(base)
            gen = {w: bench_generate(_cfg(f"{tmp}/gen_{size}_w{w}", size, args.frames, w, args.overrides))
                   for w in args.workers}
            rows.append((size, raw, env_rate, gen, _load()))
            print(f"{size}x{size}: raw {raw:.1f}/s, env {env_rate:.1f}/s, "
                  + ", ".join(f"W={w} {r:.1f}/s (warm-up {s:.1f} s, wall {a:.1f}/s)" for w, (r, s, a) in gen.items())
                  + f"; load {rows[-1][-1]}", file=sys.stderr)

    ws = args.workers
    views = base.views_per_scene
    head = (["size", "raw getCameraImage (f/s)", f"env, {views} views/scene (f/s)"]
            + [f"generate W={w} steady (f/s)" for w in ws] + [f"warm-up W={w} (s)" for w in ws]
            + ["W=1 / raw"] + [f"W={w} / W=1" for w in ws if w != 1] + ["load avg 1/5/15 min after"])
    print(f"\ncpu cores: {os.cpu_count()}, frames per measurement: {args.frames}, views_per_scene: {views}, "
          f"overrides: {' '.join(args.overrides) or 'none'}, load avg before: {load_before}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for size, raw, env_rate, gen, load in rows:
        one = gen.get(1, (float("nan"),))[0]
        cells = ([f"{size}x{size}", f"{raw:.1f}", f"{env_rate:.1f}"] + [f"{gen[w][0]:.1f}" for w in ws]
                 + [f"{gen[w][1]:.1f}" for w in ws] + [f"{one / raw:.2f}x"]
                 + [f"{gen[w][0] / one:.2f}x" for w in ws if w != 1] + [load])
        print("| " + " | ".join(cells) + " |")
    print("\ntargets: W=1 / raw >= 0.8x, W=2 / W=1 >= 1.8x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
