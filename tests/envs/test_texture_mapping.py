"""Where a texture lands: ``texture_mapping: per_face`` (the whole image once on every box face,
as sim2real_envs/README.md "Appearance keys" describes) and ``texture_repeat`` (n x m copies), checked by
pixel colour at projected points of a quadrant texture, with lighting/post-processing fixed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sim2real_envs.config import SceneConfigError, load_scene
from sim2real_envs.tabletop import TabletopEnv

# Quadrants of the test image as seen on a face: (right?, top?) -> colour name.
QUADS = {(False, True): "red", (True, True): "green", (False, False): "blue",
         (True, False): "yellow"}
RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
# Object-frame faces of a box: normal, image-right axis, image-up axis (the documented layout).
FACES = {"+x": ((1, 0, 0), (0, 1, 0), (0, 0, 1)), "-x": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
         "+y": ((0, 1, 0), (-1, 0, 0), (0, 0, 1)), "-y": ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
         "+z": ((0, 0, 1), (1, 0, 0), (0, 1, 0))}
SIZE = 0.1


def quad_png(path) -> str:
    img = np.zeros((64, 64, 3), np.uint8)
    for (right, top), name in QUADS.items():
        img[(0 if top else 32):(32 if top else 64), (32 if right else 0):(64 if right else 32)] = \
            RGB[name]
    Image.fromarray(img).save(path)
    return str(path)


def classify(px) -> str | None:
    px = np.asarray(px, float)
    hi = px > 0.5 * px.max()
    return {(True, False, False): "red", (False, True, False): "green",
            (False, False, True): "blue", (True, True, False): "yellow"}.get(tuple(hi))


def expected(a: float, b: float, nu: int, nv: int) -> str:
    """Colour at face coordinates a (0 left .. 1 right), b (0 bottom .. 1 top)."""
    return QUADS[((a * nu) % 1.0 >= 0.5, (b * nv) % 1.0 >= 0.5)]


def scene(tex: str, azimuth: float, mapping="per_face", repeat=(1, 1), table=None) -> dict:
    return {
        "objects": [{"class": "cube", "shape": "box", "size": [SIZE] * 3, "appearance": {
            "randomize": False, "color": [1, 1, 1, 1], "texture": tex,
            "texture_mapping": mapping, "texture_repeat": list(repeat)}}],
        "num_targets": [1, 1], "num_distractors": [0, 0],
        "camera": {"fov_deg": 45.0, "width": 320, "height": 240, "target": [0.0, 0.0, 0.05],
                   "target_jitter_m": [0, 0, 0], "distance_m": [0.45, 0.45],
                   "azimuth_deg": [azimuth, azimuth], "elevation_deg": [35, 35],
                   "roll_deg": [0, 0]},
        "background": {"enabled": False},
        "table": table or {"appearance": {"randomize": False}},
        "placement": {"area_x_m": [0.0, 0.0], "area_y_m": [0.0, 0.0]},
        "lighting": {"randomize": False},
        "postprocess": {"enabled": False},
        "physics": {"settle_steps": 20},
    }


def project(labels, T_cam_from_x, pts):
    K = np.array(labels["camera"]["K"])
    pc = pts @ T_cam_from_x[:3, :3].T + T_cam_from_x[:3, 3]
    uv = pc @ K.T
    return uv[:, :2] / uv[:, 2:], pc


def face_checks(obs, labels, nu=1, nv=1) -> dict[str, list[tuple[str, str | None]]]:
    """Per visible cube face: (expected, seen) colours at sub-quadrant centres."""
    (obj,) = labels["objects"]
    T = np.array(obj["pose_cam_from_obj"])
    cam_in_obj = np.linalg.inv(T)[:3, 3]
    out = {}
    ticks_u = (np.arange(4 * nu) + 0.5) / (4 * nu)
    ticks_v = (np.arange(4 * nv) + 0.5) / (4 * nv)
    for name, (n, u, v) in FACES.items():
        n, u, v = (np.array(x, float) for x in (n, u, v))
        centre = 0.5 * SIZE * n
        view = cam_in_obj - centre
        if n @ view / np.linalg.norm(view) < 0.35:  # seen too edge-on (or from behind)
            continue
        ab = [(a, b) for a in ticks_u for b in ticks_v]
        pts = np.array([centre + (a - 0.5) * SIZE * u + (b - 0.5) * SIZE * v for a, b in ab])
        uv, _ = project(labels, T, pts)
        seen = [classify(obs["rgb"][int(round(y)), int(round(x))]) for x, y in uv]
        out[name] = [(expected(a, b, nu, nv), s) for (a, b), s in zip(ab, seen)]
    return out


def render(sc):
    env = TabletopEnv(scene=sc)
    try:
        return env.reset(seed=0, options={"scene_seed": 3})
    finally:
        env.close()


@pytest.mark.parametrize("repeat", [(1, 1), (2, 3)])
def test_per_face_shows_the_whole_image_on_every_face(tmp_path, repeat):
    tex = quad_png(tmp_path / "quad.png")
    seen_faces = set()
    for az in (0, 90, 180, 270):  # same scene (cube yaw), camera walking round it
        obs, info = render(scene(tex, az, repeat=repeat))
        for face, pairs in face_checks(obs, info["labels"], *repeat).items():
            seen_faces.add(face)
            assert [s for _, s in pairs] == [e for e, _ in pairs], (az, face)
    assert seen_faces == set(FACES)


def test_primitive_box_shows_one_cell_per_face(tmp_path):
    """pybullet's own box UVs (the default, unchanged): a face shows one cell of the image, so the
    four quadrant points of a face share one colour (what sim2real_envs/README.md warns about)."""
    tex = quad_png(tmp_path / "quad.png")
    obs, info = render(scene(tex, 0, mapping="primitive"))
    checks = face_checks(obs, info["labels"])
    assert checks and all(len({s for _, s in pairs}) == 1 for pairs in checks.values())


def test_table_texture_repeat_tiles_the_top(tmp_path):
    """Table (1.2 x 0.8 m) with the image 6 x 4 times on its top: 20 cm tiles, quadrants where
    ``expected`` says (top face: image top towards +y, right towards +x)."""
    tex = quad_png(tmp_path / "quad.png")
    nu, nv = 6, 4
    table = {"size_m": [1.2, 0.8], "appearance": {"randomize": False, "color": [1, 1, 1, 1],
             "texture": tex, "texture_mapping": "per_face", "texture_repeat": [nu, nv]}}
    sc = scene(tex, 30, table=table)
    sc["camera"]["elevation_deg"] = [80, 80]
    sc["camera"]["distance_m"] = [0.9, 0.9]
    obs, info = render(sc)
    labels = info["labels"]
    T_cw = np.linalg.inv(np.array(labels["camera"]["T_world_from_cam"]))
    xs = (np.arange(4 * nu) + 0.5) / (4 * nu)
    ys = (np.arange(4 * nv) + 0.5) / (4 * nv)
    ab = np.array([(a, b) for a in xs for b in ys])
    pts = np.c_[(ab[:, 0] - 0.5) * 1.2, (ab[:, 1] - 0.5) * 0.8, np.zeros(len(ab))]
    uv, _ = project(labels, T_cw, pts)
    h, w = obs["segmentation"].shape
    n = 0
    for (a, b), (x, y) in zip(ab, uv):
        r, c = int(round(y)), int(round(x))
        if 2 <= r < h - 2 and 2 <= c < w - 2 and not obs["segmentation"][r - 2:r + 3,
                                                                         c - 2:c + 3].any():
            assert classify(obs["rgb"][r, c]) == expected(a, b, nu, nv), (a, b)
            n += 1
    assert n >= 40


def test_mapping_keys_are_validated(tmp_path):
    tex = quad_png(tmp_path / "quad.png")
    sc = scene(tex, 0)
    sc["objects"][0].update(shape="sphere", radius=0.03)
    with pytest.raises(SceneConfigError, match=r"scene\.objects\[0\]\.appearance\.texture_mapping"):
        load_scene(sc)
    sc = scene(tex, 0, mapping="uv")
    with pytest.raises(SceneConfigError, match=r"appearance\.texture_mapping.*per_face"):
        load_scene(sc)
    sc = scene(tex, 0, repeat=(0, 2))
    with pytest.raises(SceneConfigError, match=r"appearance\.texture_repeat"):
        load_scene(sc)
    sc = scene(tex, 0)
    sc["props"] = [{"shape": "cylinder", "appearance": {"texture_mapping": "per_face"}}]
    with pytest.raises(SceneConfigError, match=r"scene\.props\[0\]\.appearance\.texture_mapping"):
        load_scene(sc)


def test_color_multiplies_the_texture(tmp_path):
    """`color: [1, 0, 0, 1]` keeps the image's red channel: red and yellow quadrants look red,
    green and blue ones black (the README's "color multiplies the texture")."""
    tex = quad_png(tmp_path / "quad.png")
    sc = scene(tex, 0)
    sc["objects"][0]["appearance"]["color"] = [1, 0, 0, 1]
    obs, info = render(sc)
    checks = face_checks(obs, info["labels"])
    (obj,) = info["labels"]["objects"]
    T = np.array(obj["pose_cam_from_obj"])
    uv, _ = project(info["labels"], T, np.array([[0, 0, SIZE / 2 + 1e-4]]) + np.array(
        [[-SIZE / 4, SIZE / 4, 0], [SIZE / 4, SIZE / 4, 0], [-SIZE / 4, -SIZE / 4, 0],
         [SIZE / 4, -SIZE / 4, 0]]))  # top face: red, green, blue, yellow quadrants
    px = [obs["rgb"][int(round(y)), int(round(x))].astype(int) for x, y in uv]
    assert checks and all(p[1] < 10 and p[2] < 10 for p in px)
    assert px[0][0] > 100 and px[3][0] > 100 and px[1][0] < 10 and px[2][0] < 10
