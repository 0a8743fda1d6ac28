"""How far can scene knobs close the feature gap of the ViSP twin, and through which term? (issue 16)

Renders the twin (configs/scenes/visp_cube.yaml) and a fixed list of edited scenes (one knob or a few
at a time, down to every randomization off) with the same seed, embeds them with the frozen backbone
that `sim2real tune` uses and compares each with the unlabelled real frames 0-99 (never 100-217):
feat_frechet and feat_mmd (one MMD bandwidth: the twin's), and the Fréchet distance's terms
(`sim2real.gap.distances.frechet_terms`): `mean` (content offset) and the sim set's own `spread`.
A scene that lowers the Fréchet distance through `spread` is closer to the clip only because it
randomizes less. Deterministic (same seeds, same numbers); features cached under --cache.

    OMP_NUM_THREADS=2 python bench/bench_tune_floor.py [--frames 96] [--seed 7] [--cache DIR] [--tuned A.yaml ...]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOISE_OFF = {"postprocess.noise_prob": 0.0}
TABLE_WHITE = {"table.appearance.value_range": [0.9, 1.0], "table.appearance.texture_prob": 0.0}
ALL_OFF = {"object_appearance.texture_prob": 0.0, "object_appearance.random_color": False,
           "table.appearance.texture_prob": 0.0, "background.appearance.texture_prob": 0.0,
           "lighting.randomize": False, "lighting.shadow_prob": 0.0, "camera.distance_m": [0.61, 0.61],
           "camera.azimuth_deg": [0.0, 0.0], "camera.elevation_deg": [44.0, 44.0], "camera.roll_deg": [0.0, 0.0],
           "camera.target_jitter_m": [0.0, 0.0, 0.0], "camera.focal_jitter": 0.0, "camera.principal_jitter_px": 0.0,
           "num_distractors": [0, 0], "postprocess.noise_prob": 0.0, "postprocess.blur_prob": 0.0,
           "postprocess.jpeg_prob": 0.0, "postprocess.color_jitter_prob": 0.0}

# (name, {dotted key: value}); a numeric part indexes the scene's object list (objects.0 = the cube).
PROBES: list[tuple[str, dict]] = [
    ("cube brighter (value 0.9-1)", {"objects.0.appearance.value_range": [0.9, 1.0]}),
    ("tube brighter (value 0.8-1)", {"objects.1.appearance.value_range": [0.8, 1.0]}),
    ("ambient light high [0.7, 0.9]", {"lighting.ambient": [0.7, 0.9]}),
    ("ambient light low [0.3, 0.5]", {"lighting.ambient": [0.3, 0.5]}),
    ("shadows off", {"lighting.shadow_prob": 0.0}),
    ("no distractors", {"num_distractors": [0, 0]}),
    ("smaller table 0.6 x 0.5 m (edge in view)", {"table.size_m": [0.6, 0.5]}),
    ("backdrop photos off", {"background.appearance.texture_prob": 0.0}),
    ("camera fixed near the real pose", {"camera.elevation_deg": [43.0, 45.0], "camera.azimuth_deg": [-5.0, 5.0],
                                         "camera.distance_m": [0.58, 0.64]}),
    ("render at 640x480 (camera.scale 1)", {"camera.scale": 1.0}),
    ("weaker noise (std 0.002-0.008)", {"postprocess.noise_std": [0.002, 0.008]}),
    ("noise off", NOISE_OFF),
    ("table plain white", TABLE_WHITE),
    ("noise off + table plain white", {**NOISE_OFF, **TABLE_WHITE}),
    ("noise off + white table + backdrop photos 0.4", {**NOISE_OFF, **TABLE_WHITE,
                                                       "background.appearance.texture_prob": 0.4}),
    ("noise off + white table + object textures 0.2", {**NOISE_OFF, **TABLE_WHITE,
                                                       "object_appearance.texture_prob": 0.2}),
    # Camera-model and table edits on top of each other (session 6): do they add up?
    ("noise off + white table + render at 640x480", {**NOISE_OFF, **TABLE_WHITE, "camera.scale": 1.0}),
    ("noise off + white table + blur 0.8", {**NOISE_OFF, **TABLE_WHITE, "postprocess.blur_prob": 0.8}),
    ("noise off + white table + colour jitter off", {**NOISE_OFF, **TABLE_WHITE,
                                                     "postprocess.color_jitter_prob": 0.0}),
    ("noise off + white table + JPEG off", {**NOISE_OFF, **TABLE_WHITE, "postprocess.jpeg_prob": 0.0}),
    ("every randomization off", ALL_OFF),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache", default=None, help="feature cache (default: sim2real's)")
    ap.add_argument("--tuned", nargs="*", default=[], help="tuned scene YAMLs to score on the same render")
    a = ap.parse_args()

    from sim2real.gap.distances import frechet_terms
    from sim2real.tune.attribution import gaps
    from sim2real.tune.config import TuneConfig
    from sim2real.tune.knobs import put
    from sim2real.tune.probe import Embedder, FeatureCache, Prober
    from sim2real.tune.run import load_real, load_scene_dict

    cfg = TuneConfig()
    scene, _ = load_scene_dict(cfg.scene_file)
    images, source, _ = load_real(cfg)
    prober = Prober(Embedder(cfg.backbone, cfg.input_hw), FeatureCache(a.cache))
    real = prober.real_features(images, source)
    rows = [("hand-written twin", scene)]
    for name, edits in PROBES:
        s = copy.deepcopy(scene)
        for k, v in edits.items():
            put(s, k, v)
        rows.append((name, s))
    for path in a.tuned:
        rows.append((f"tuned: {path}", load_scene_dict(path)[0]))
    print(f"{a.frames} frames, seed {a.seed}, {len(real)} real frames; load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print("| scene | feat_frechet | vs twin | feat_mmd | vs twin | mean term | sim spread | cross |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ref = sigma = None
    t0 = time.time()
    for name, s in rows:
        f = prober.sim_features({k: v for k, v in s.items() if k != "base_dir"}, a.frames, a.seed)
        g = gaps(f, real, sigma)
        t = frechet_terms(f, real)
        if ref is None:
            ref, sigma = g, g["mmd_sigma"]
        print(f"| {name} | {g['frechet']:.1f} | {g['frechet'] / ref['frechet'] - 1:+.1%} | {g['mmd']:.4f} | "
              f"{g['mmd'] / ref['mmd'] - 1:+.1%} | {t['mean']:.1f} | {t['spread_sim']:.1f} | {t['cross']:.1f} |",
              flush=True)
    print(f"real spread {t['spread_real']:.1f}; {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
