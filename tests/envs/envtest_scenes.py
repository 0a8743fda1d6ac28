"""Small, fast scenes for the env tests (tiny images, short settling)."""

from __future__ import annotations

import numpy as np
import yaml

from sim2real_envs.config import DEFAULT_SCENE_YAML

W, H = 64, 48


def default_scene(**over) -> dict:
    scene = yaml.safe_load(DEFAULT_SCENE_YAML)
    scene["physics"]["settle_steps"] = 30
    for k, v in over.items():
        scene[k] = v
    return scene


def sphere_scene(fx=60.0, fy=58.0, cx=40.3, cy=17.8, width=W, height=H) -> dict:
    """One small sphere target, a camera with an off-centre principal point, nothing random."""
    return {
        "objects": [{"class": "ball", "shape": "sphere", "radius": 0.02}],
        "num_targets": [1, 1], "num_distractors": [0, 0],
        "camera": {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "width": width, "height": height,
                   "target": [0.0, 0.0, 0.02], "target_jitter_m": [0.0, 0.0, 0.0],
                   "distance_m": [0.6, 0.6], "azimuth_deg": [25, 25], "elevation_deg": [50, 50],
                   "roll_deg": [0, 0]},
        "background": {"enabled": False},
        "table": {"appearance": {"randomize": False}},
        "object_appearance": {"randomize": False, "color": [1.0, 0.2, 0.2, 1.0]},
        "placement": {"area_x_m": [0.0, 0.0], "area_y_m": [0.0, 0.0]},
        "lighting": {"randomize": False},
        "postprocess": {"enabled": False},
        "physics": {"settle_steps": 20},
    }


def pixels_alone(env, body: int, others: list[int]) -> int:
    """Pixels of render-world ``body`` in the frame's view with ``others`` moved far away
    (brute-force "unoccluded" area: one full render per object), then put back."""
    c = env.client
    saved = {b: c.getBasePositionAndOrientation(b) for b in others if b != body}
    try:
        for b in saved:
            c.resetBasePositionAndOrientation(b, [0, 0, -1000], [0, 0, 0, 1])
        _, _, _, _, raw = env.render_raw()
    finally:
        for b, (pos, orn) in saved.items():
            c.resetBasePositionAndOrientation(b, pos, orn)
    return int((np.asarray(raw) == body).sum())
