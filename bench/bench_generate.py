"""Benchmark ``sim2real generate``: frames/s per image size and worker count, next to the renderer.

Columns, all measured in this run on the same scene (``configs/scenes/default.yaml`` at the size):

* ``raw getCameraImage``: ``env.unwrapped.render_raw()`` on an already built scene — the bare
  renderer call, the ceiling for one process.
* ``env.reset``: a fresh randomized scene per frame (rebuild, settle, render, labels, noise) —
  what every dataset frame needs before anything is written.
* ``generate W=k``: the full generator (reset + PNG/depth/mask/label files, atomic writes),
  steady state after every worker rendered its first frame (start-up is reported separately).

Targets: generate W=1 >= 0.8x raw; W=2 >= 1.8x W=1.  Usage::

    OMP_NUM_THREADS=1 python bench/bench_generate.py [--frames 24] [--sizes 128 224] [--workers 1 2]
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
from sim2real.data.generate import GenerateConfig, frame_seed, generate, load_scene, make_env  # noqa: E402


def _cfg(out: str, size: int, frames: int, workers: int, extra: list[str]) -> GenerateConfig:
    return load_config(GenerateConfig, ROOT / "configs/generate.yaml",
                       [f"out={out}", f"num_frames={frames}", f"workers={workers}", "progress=false",
                        "grid.enabled=false", f"scene_file={ROOT / 'configs/scenes/default.yaml'}",
                        f"scene.camera.width={size}", f"scene.camera.height={size}", *extra])


def bench_env(cfg: GenerateConfig, frames: int, raw_repeats: int = 5) -> tuple[float, float]:
    """(raw getCameraImage frames/s, env.reset frames/s) in this process."""
    env = make_env(cfg.env_id, load_scene(cfg), cfg.renderer)
    try:
        env.reset(seed=frame_seed(cfg.seed, 0))  # warm-up (imports, caches)
        t_reset = t_raw = 0.0
        for i in range(1, frames + 1):
            t0 = time.perf_counter()
            env.reset(seed=frame_seed(cfg.seed, i))
            t1 = time.perf_counter()
            for _ in range(raw_repeats):
                env.unwrapped.render_raw()
            t_reset += t1 - t0
            t_raw += (time.perf_counter() - t1) / raw_repeats
        return frames / t_raw, frames / t_reset
    finally:
        env.close()


def bench_generate(cfg: GenerateConfig) -> tuple[float, float]:
    """(steady frames/s, seconds to the first frame of every worker)."""
    m = generate(cfg)
    run = m["run"]
    steady = run["steady_frames_per_s"] or run["frames_per_s"]
    startup = run["elapsed_s"] - (run["rendered_now"] - run["workers"]) / steady if steady else float("nan")
    return steady, startup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24, help="frames per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("overrides", nargs="*", help="extra generate config overrides, e.g. renderer=egl")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        for size in args.sizes:
            raw, env_rate = bench_env(_cfg(f"{tmp}/env", size, args.frames, 1, args.overrides), args.frames)
            gen = {}
            for w in args.workers:
                out = f"{tmp}/gen_{size}_w{w}"
                gen[w] = bench_generate(_cfg(out, size, max(args.frames, 2 * w + 2), w, args.overrides))
            rows.append((size, raw, env_rate, gen))
            print(f"{size}x{size}: raw {raw:.1f}/s, env.reset {env_rate:.2f}/s, "
                  + ", ".join(f"W={w} {r:.2f}/s (start-up {s:.1f} s)" for w, (r, s) in gen.items()),
                  file=sys.stderr)

    ws = args.workers
    head = (["size", "raw getCameraImage (f/s)", "env.reset (f/s)"] + [f"generate W={w} (f/s)" for w in ws]
            + ["W=1 / raw", "W=1 / env.reset"] + [f"W={w} / W=1" for w in ws if w != 1])
    print(f"\ncpu cores: {os.cpu_count()}, frames per measurement: {args.frames}, "
          f"overrides: {' '.join(args.overrides) or 'none'}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for size, raw, env_rate, gen in rows:
        one = gen.get(1, (float("nan"), 0))[0]
        cells = [f"{size}x{size}", f"{raw:.1f}", f"{env_rate:.2f}"] + [f"{gen[w][0]:.2f}" for w in ws]
        cells += [f"{one / raw:.2f}x", f"{one / env_rate:.2f}x"] + [f"{gen[w][0] / one:.2f}x" for w in ws if w != 1]
        print("| " + " | ".join(cells) + " |")
    print("\ntargets: W=1 / raw >= 0.8x, W=2 / W=1 >= 1.8x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
