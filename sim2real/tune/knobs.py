"""Randomization knob groups and the search space, as edits of a scene dict (the YAML's mapping).

Attribution switches one group off (or narrows it) at a time; the search sets a handful of
continuous ranges and probabilities. Both work on the plain scene dict that ``sim2real generate``
hands to the env (``sim2real_envs.config.read_scene_file``), so the result is a scene YAML that goes
through the same validation as any other (``sim2real_envs.config.load_scene``). Missing keys take
the scene dataclasses' defaults, which is why a group reads a value through :func:`get` with the
default the env would use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Defaults of the scene dataclasses that the knobs read (sim2real_envs.config); a key absent from
# the YAML means the default is in force there.
_DEFAULTS = {
    "object_appearance.texture_prob": 0.5, "object_appearance.random_color": True,
    "table.appearance.texture_prob": 0.5, "background.appearance.texture_prob": 1.0,
    "background.enabled": True, "lighting.randomize": True, "lighting.shadow_prob": 0.5,
    "camera.focal_jitter": 0.0, "camera.principal_jitter_px": 0.0,
    "camera.target_jitter_m": [0.05, 0.05, 0.0], "camera.distance_m": [0.5, 0.8],
    "camera.azimuth_deg": [-180.0, 180.0], "camera.elevation_deg": [35.0, 70.0], "camera.roll_deg": [-5.0, 5.0],
    "num_distractors": [0, 3], "postprocess.enabled": True, "postprocess.noise_prob": 0.5,
    "postprocess.blur_prob": 0.3, "postprocess.jpeg_prob": 0.3, "postprocess.color_jitter_prob": 0.5,
    "postprocess.grayscale": False, "lighting.ambient": [0.4, 0.7], "lighting.diffuse": [0.3, 0.7],
    "table.appearance.value_range": [0.2, 1.0], "postprocess.contrast": 0.2, "postprocess.brightness": 0.2,
    "postprocess.noise_std": [0.01, 0.05], "postprocess.blur_sigma": [0.3, 1.2], "postprocess.gamma": [1.0, 1.0],
}


def get(scene: dict, key: str) -> Any:
    """The value of dotted ``key`` in ``scene`` (the dataclass default when the YAML leaves it out)."""
    node: Any = scene
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return copy.deepcopy(_DEFAULTS.get(key))
        node = node[part]
    return node


def put(scene: dict, key: str, value: Any) -> None:
    """Set dotted ``key`` in ``scene`` (in place), creating mappings on the way; a numeric part
    indexes a list on the way (``objects.0.appearance.value_range``: the first object's)."""
    *parents, leaf = key.split(".")
    node: Any = scene
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def _object_appearances(scene: dict) -> list[dict]:
    """Appearance mappings of every target/distractor: each object's own, plus the shared default."""
    out = [o["appearance"] for o in scene.get("objects", []) if isinstance(o.get("appearance"), dict)]
    if not isinstance(scene.get("object_appearance"), dict):
        scene["object_appearance"] = {}
    return out + [scene["object_appearance"]]


# ----------------------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class KnobGroup:
    """One randomization group: ``probe(scene)`` edits a copy in place to switch it off / narrow
    it and returns a short description of the change, or None when the group is already off."""

    name: str
    what: str
    probe: Callable[[dict], str | None]


def _textures_off(scene: dict) -> str | None:
    apps = _object_appearances(scene)
    if all(a.get("texture_prob", 0.5) == 0 and a.get("random_color", True) is False for a in apps):
        return None
    for a in apps:
        a["texture_prob"], a["random_color"] = 0.0, False
    return "object textures and random colours off (plain grey objects)"


def _surface_textures_off(where: str) -> Callable[[dict], str | None]:
    def probe(scene: dict) -> str | None:
        key = f"{where}.appearance.texture_prob"
        if get(scene, key) == 0:
            return None
        put(scene, key, 0.0)
        return f"{where} textures off (random plain colour)"
    return probe


def _lighting_off(scene: dict) -> str | None:
    if get(scene, "lighting.randomize") is False:
        return None
    put(scene, "lighting.randomize", False)
    return "light randomization off (one fixed light)"


def _shadows_off(scene: dict) -> str | None:
    if get(scene, "lighting.shadow_prob") == 0:
        return None
    put(scene, "lighting.shadow_prob", 0.0)
    return "shadows off"


def _mid(pair: list) -> list:
    m = (float(pair[0]) + float(pair[1])) / 2
    return [m, m]


def _pose_narrow(scene: dict) -> str | None:
    keys = ("camera.distance_m", "camera.azimuth_deg", "camera.elevation_deg", "camera.roll_deg")
    jitter = get(scene, "camera.target_jitter_m")
    if all(get(scene, k)[0] == get(scene, k)[1] for k in keys) and not any(jitter):
        return None
    for k in keys:
        put(scene, k, _mid(get(scene, k)))
    put(scene, "camera.target_jitter_m", [0.0, 0.0, 0.0])
    return "camera pose fixed at the middle of its ranges (distance, azimuth, elevation, roll, target)"


def _intrinsics_off(scene: dict) -> str | None:
    if not get(scene, "camera.focal_jitter") and not get(scene, "camera.principal_jitter_px"):
        return None
    put(scene, "camera.focal_jitter", 0.0)
    put(scene, "camera.principal_jitter_px", 0.0)
    return "intrinsics jitter off (focal, principal point)"


def _distractors_off(scene: dict) -> str | None:
    if get(scene, "num_distractors")[1] == 0:
        return None
    put(scene, "num_distractors", [0, 0])
    return "no distractors"


def _prob_off(key: str, what: str) -> Callable[[dict], str | None]:
    def probe(scene: dict) -> str | None:
        if not get(scene, "postprocess.enabled") or get(scene, f"postprocess.{key}") == 0:
            return None
        put(scene, f"postprocess.{key}", 0.0)
        return what
    return probe


def _grayscale_toggle(scene: dict) -> str | None:
    # Toggled rather than switched off: on a grayscale twin "off" means colour renders, on a colour
    # scene the probe asks whether a grayscale camera model would fit the footage better.
    was = bool(get(scene, "postprocess.grayscale"))
    put(scene, "postprocess.grayscale", not was)
    return "grayscale off (colour renders)" if was else "grayscale on (gray renders)"


GROUPS: dict[str, KnobGroup] = {g.name: g for g in (
    KnobGroup("object_textures", "appearance: object textures and colours", _textures_off),
    KnobGroup("table_texture", "appearance: table texture", _surface_textures_off("table")),
    KnobGroup("background_texture", "appearance: backdrop photo textures", _surface_textures_off("background")),
    KnobGroup("lighting", "lighting: direction, ambient/diffuse/specular, colour", _lighting_off),
    KnobGroup("shadows", "lighting: shadows", _shadows_off),
    KnobGroup("camera_pose", "camera pose jitter", _pose_narrow),
    KnobGroup("intrinsics", "camera intrinsics jitter", _intrinsics_off),
    KnobGroup("distractors", "distractor objects", _distractors_off),
    KnobGroup("noise", "post-processing: sensor noise", _prob_off("noise_prob", "sensor noise off")),
    KnobGroup("blur", "post-processing: blur", _prob_off("blur_prob", "blur off")),
    KnobGroup("jpeg", "post-processing: JPEG artefacts", _prob_off("jpeg_prob", "JPEG artefacts off")),
    KnobGroup("colour_jitter", "post-processing: brightness/contrast/colour jitter",
              _prob_off("color_jitter_prob", "colour jitter off")),
    KnobGroup("grayscale", "post-processing: grayscale", _grayscale_toggle),
)}


def probe_scene(scene: dict, group: str) -> tuple[dict, str | None]:
    """A copy of ``scene`` with ``group`` switched off / narrowed, and what changed (None: nothing)."""
    out = copy.deepcopy(scene)
    return out, GROUPS[group].probe(out)


# ----------------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class Param:
    """One searched number: a scalar at dotted ``key``, or the centre / half width of the [lo, hi]
    range at ``key`` (``part``), so any value in [low, high] gives a valid range; ``limits`` clip the
    range's ends to what the scene schema accepts."""

    name: str
    low: float
    high: float
    key: str
    part: str = "value"      # value | center | half_width
    limits: tuple[float, float] = (0.0, 1.0)


def _range(key: str, c: tuple[float, float], hw: tuple[float, float],
           limits: tuple[float, float] = (0.0, 1.0)) -> tuple[Param, Param]:
    return (Param(f"{key}.center", c[0], c[1], key, "center", limits),
            Param(f"{key}.half_width", hw[0], hw[1], key, "half_width", limits))


SEARCH_SPACE: dict[str, Param] = {p.name: p for p in (
    # where the camera looks from: a static real camera sits somewhere inside the twin's ranges
    *_range("camera.azimuth_deg", (-30.0, 30.0), (0.0, 30.0), (-360.0, 360.0)),
    *_range("camera.elevation_deg", (30.0, 60.0), (0.0, 10.0), (-89.9, 90.0)),
    *_range("camera.distance_m", (0.45, 0.8), (0.0, 0.1), (0.01, 10.0)),
    *_range("lighting.ambient", (0.2, 0.9), (0.0, 0.25)),
    *_range("lighting.diffuse", (0.1, 0.8), (0.0, 0.25)),
    *_range("table.appearance.value_range", (0.3, 0.95), (0.0, 0.3)),
    Param("lighting.shadow_prob", 0.0, 1.0, "lighting.shadow_prob"),
    Param("background.appearance.texture_prob", 0.0, 1.0, "background.appearance.texture_prob"),
    Param("table.appearance.texture_prob", 0.0, 1.0, "table.appearance.texture_prob"),
    Param("object_appearance.texture_prob", 0.0, 1.0, "object_appearance.texture_prob"),
    Param("postprocess.noise_prob", 0.0, 1.0, "postprocess.noise_prob"),
    Param("postprocess.blur_prob", 0.0, 1.0, "postprocess.blur_prob"),
    Param("postprocess.color_jitter_prob", 0.0, 1.0, "postprocess.color_jitter_prob"),
    Param("postprocess.contrast", 0.0, 0.5, "postprocess.contrast"),
    # the camera's tone curve (out = in ** gamma; > 1 darkens): a global brightness offset that no light
    # or texture knob gives (the real frames are darker than the twin's: mean luma 128 vs 160)
    *_range("postprocess.gamma", (0.7, 2.0), (0.0, 0.3), (0.2, 5.0)),
)}


def current_values(scene: dict, names: list[str]) -> dict[str, float]:
    """The scene's own values of the searched ``names`` (clipped to their bounds)."""
    out = {}
    for n in names:
        p = SEARCH_SPACE[n]
        if p.part == "value":
            v = float(get(scene, p.key))
        else:
            lo, hi = (float(x) for x in get(scene, p.key))
            v = (lo + hi) / 2 if p.part == "center" else (hi - lo) / 2
        out[n] = min(max(v, p.low), p.high)
    return out


def apply_params(scene: dict, values: dict[str, float]) -> dict:
    """A copy of ``scene`` with the searched ``values`` written in (unknown names are an error);
    a range keeps its own centre or half width where only the other one is searched."""
    unknown = [k for k in values if k not in SEARCH_SPACE]
    if unknown:
        raise ValueError(f"unknown search parameter(s) {unknown}; known: {list(SEARCH_SPACE)}")
    out = copy.deepcopy(scene)
    ranges: dict[str, dict[str, float]] = {}
    for name, v in values.items():
        p = SEARCH_SPACE[name]
        if p.part == "value":
            put(out, p.key, round(float(v), 4))
        else:
            ranges.setdefault(p.key, {})[p.part] = float(v)
    for key, parts in ranges.items():
        lo, hi = (float(x) for x in get(scene, key))
        c, hw = parts.get("center", (lo + hi) / 2), parts.get("half_width", (hi - lo) / 2)
        a, b = next(p.limits for p in SEARCH_SPACE.values() if p.key == key)
        put(out, key, [round(max(a, c - hw), 4), round(min(b, c + hw), 4)])
    return out
