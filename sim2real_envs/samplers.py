"""Small sampler functions (Kubric style): each draws one aspect of a scene from ``rng``.

Every function takes the env's ``np_random`` generator first and a config block, and returns
plain values; the env composes them.  No other source of randomness is used.
"""

from __future__ import annotations

import colorsys
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sim2real_envs.camera import Intrinsics, orbit_pose
from sim2real_envs.config import (AppearanceConfig, CameraConfig, LightingConfig, ObjectConfig,
                         PlacementConfig, SceneConfig)
from sim2real_envs.textures import folder_images


def uniform(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def integer(rng: np.random.Generator, lo_hi) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def color(rng: np.random.Generator, value_range=(0.2, 1.0)) -> list[float]:
    h, s, v = rng.random(), rng.uniform(0.1, 1.0), uniform(rng, value_range)
    return [*colorsys.hsv_to_rgb(h, s, v), 1.0]


@dataclass(frozen=True)
class Appearance:
    rgba: list[float]
    texture_key: Optional[tuple]  # TextureBank key, or None for the asset's own look


def appearance(rng: np.random.Generator, cfg: AppearanceConfig, pool_size: int,
               base_dir: Optional[str]) -> Optional[Appearance]:
    """Colour + texture for one surface; None = keep the asset's own colour/texture."""
    fixed_tex = None
    if cfg.texture is not None:
        from sim2real_envs.config import resolve_file

        fixed_tex = ("file", resolve_file(cfg.texture, "texture", base_dir))
    if not cfg.randomize:
        return Appearance(list(cfg.color), _repeated(fixed_tex, cfg))
    rgba = color(rng, cfg.value_range) if cfg.random_color else list(cfg.color)
    key = fixed_tex
    if rng.random() < cfg.texture_prob:
        sources: list[tuple] = [("pattern", p) for p in cfg.patterns]
        sources += [("skimage", n) for n in cfg.images]
        if cfg.folder is not None:
            folder = os.path.join(base_dir or "", cfg.folder)  # absolute stays absolute
            sources += [("file", f) for f in folder_images(folder)]
        if sources:
            src = sources[int(rng.integers(len(sources)))]
            key = ("pattern", src[1], int(rng.integers(pool_size))) if src[0] == "pattern" else src
            if src[0] != "pattern":  # photos keep their colours, only slightly tinted
                rgba = [1 - 0.3 * (1 - c) for c in rgba[:3]] + [1.0]
    return Appearance(rgba, _repeated(key, cfg))


def _repeated(key: Optional[tuple], cfg: AppearanceConfig) -> Optional[tuple]:
    """The texture key of ``key``'s image repeated ``texture_repeat`` times (no draw)."""
    nu, nv = cfg.texture_repeat
    return key if key is None or (nu, nv) == (1, 1) else ("tiled", nu, nv, key)


def intrinsics(rng: np.random.Generator, base: Intrinsics, cfg: CameraConfig) -> Intrinsics:
    """Jitter focal lengths (relative) and principal point (pixels)."""
    if cfg.focal_jitter <= 0 and cfg.principal_jitter_px <= 0:
        return base
    f = 1.0 + rng.uniform(-cfg.focal_jitter, cfg.focal_jitter) if cfg.focal_jitter > 0 else 1.0
    dc = rng.uniform(-cfg.principal_jitter_px, cfg.principal_jitter_px, 2) \
        if cfg.principal_jitter_px > 0 else np.zeros(2)
    return Intrinsics(base.fx * f, base.fy * f, base.cx + float(dc[0]), base.cy + float(dc[1]),
                      base.width, base.height)


def camera_pose(rng: np.random.Generator, cfg: CameraConfig) -> np.ndarray:
    """T_world_from_cam on a sphere around the (jittered) look-at target."""
    jitter = np.array(cfg.target_jitter_m)
    target = np.array(cfg.target) + rng.uniform(-1, 1, 3) * jitter
    return orbit_pose(target, uniform(rng, cfg.distance_m),
                      math.radians(uniform(rng, cfg.azimuth_deg)),
                      math.radians(uniform(rng, cfg.elevation_deg)),
                      math.radians(uniform(rng, cfg.roll_deg)))


@dataclass(frozen=True)
class Light:
    direction: list[float]
    color: list[float]
    ambient: float
    diffuse: float
    specular: float
    shadow: bool
    distance: float


def light(rng: np.random.Generator, cfg: LightingConfig) -> Light:
    if not cfg.randomize:
        return Light([0.3, 0.3, 1.0], [1.0, 1.0, 1.0], 0.6, 0.35, 0.05, False, cfg.distance_m)
    az = math.radians(uniform(rng, cfg.azimuth_deg))
    el = math.radians(uniform(rng, cfg.elevation_deg))
    direction = [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    col = rng.uniform(cfg.color_min, 1.0, 3).tolist()
    return Light(direction, col, uniform(rng, cfg.ambient), uniform(rng, cfg.diffuse),
                 uniform(rng, cfg.specular), bool(rng.random() < cfg.shadow_prob), cfg.distance_m)


def object_kinds(rng: np.random.Generator, scene: SceneConfig) -> list[ObjectConfig]:
    """Which object configs appear this episode: targets first, then distractors."""
    chosen: list[ObjectConfig] = []
    for role, count in (("target", scene.num_targets), ("distractor", scene.num_distractors)):
        pool = [o for o in scene.objects if o.role == role and o.count is None]
        n = integer(rng, count)
        if n > 0 and pool:
            w = np.array([o.weight for o in pool], dtype=float)
            w = w / w.sum() if w.sum() > 0 else np.full(len(pool), 1 / len(pool))
            chosen += [pool[i] for i in rng.choice(len(pool), size=n, p=w)]
        for o in scene.objects:
            if o.role == role and o.count is not None:
                chosen += [o] * integer(rng, o.count)
    return chosen


def pick_file(rng: np.random.Generator, files: list[str]) -> str:
    return files[int(rng.integers(len(files)))] if len(files) > 1 else files[0]


def orientation(rng: np.random.Generator, upright: bool) -> tuple[list[float], float]:
    """(quaternion xyzw, yaw); upright objects only turn about z."""
    yaw = float(rng.uniform(-math.pi, math.pi))
    if upright:
        return [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)], yaw
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return q.tolist(), yaw


def placements(rng: np.random.Generator, radii: list[float],
               cfg: PlacementConfig) -> list[tuple[float, float, bool]]:
    """(x, y, free) per footprint circle by rejection sampling; ``free`` is False when no free
    spot was found (the caller then drops that object from higher up)."""
    placed: list[tuple[float, float, float]] = []
    out = []
    for r in radii:
        xy = None
        for _ in range(cfg.max_tries):
            cand = (uniform(rng, cfg.area_x_m), uniform(rng, cfg.area_y_m))
            if all(math.hypot(cand[0] - x, cand[1] - y) >= r + pr + cfg.min_separation_m
                   for x, y, pr in placed):
                xy = cand
                break
        free = xy is not None
        if not free:
            xy = cand
        placed.append((xy[0], xy[1], r))
        out.append((xy[0], xy[1], free))
    return out
