import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

from sim2real_envs.config import SceneConfigError
from sim2real_envs.labels import CORNER_SIGNS
from envtest_scenes import H, W, default_scene, pixels_alone, sphere_scene

ROOT = Path(__file__).resolve().parents[2]
TABLETOP = "sim2real_envs:sim2real/Tabletop-v0"


def make(scene=None, **kw):
    return gym.make(TABLETOP, scene=scene if scene is not None else default_scene(),
                    width=W, height=H, **kw)


def test_check_env_tabletop():
    env = make(render_mode="rgb_array")
    try:
        check_env(env.unwrapped, skip_render_check=False)
    finally:
        env.close()


def test_spaces_and_obs_types():
    env = make()
    try:
        obs, info = env.reset(seed=3)
        assert obs["rgb"].shape == (H, W, 3) and obs["rgb"].dtype == np.uint8
        assert obs["depth"].shape == (H, W) and obs["depth"].dtype == np.float32
        assert obs["segmentation"].dtype == np.int32
        assert env.observation_space.contains(obs)
        json.dumps(info["labels"])  # plain python
        assert info["labels"]["classes"] == env.unwrapped.classes
        obs2, r, term, trunc, info2 = env.step(0)
        assert env.observation_space.contains(obs2) and not term
    finally:
        env.close()


def _run(seed, steps=1):
    env = make()
    try:
        out = [env.reset(seed=seed)]
        out += [env.step(0)[::4] for _ in range(steps)]
        return out
    finally:
        env.close()


def test_same_seed_same_bytes_and_history_independent():
    a, b = _run(11), _run(11)
    for (oa, ia), (ob, ib) in zip(a, b):
        for k in oa:
            assert oa[k].tobytes() == ob[k].tobytes(), k
        assert json.dumps(ia["labels"]) == json.dumps(ib["labels"])
    # Same env: a reset with the same seed gives the same frame whatever came before.
    env = make()
    try:
        first, _ = env.reset(seed=11)
        env.reset(seed=5)
        env.step(0)
        again, info = env.reset(seed=11)
        assert all(first[k].tobytes() == again[k].tobytes() for k in first)
        assert json.dumps(info["labels"]) == json.dumps(a[0][1]["labels"])
        different, _ = env.reset(seed=12)
        assert different["rgb"].tobytes() != first["rgb"].tobytes()
    finally:
        env.close()


def _check_labels_against_masks(obs, labels):
    seg, depth = obs["segmentation"], obs["depth"]
    K = np.array(labels["camera"]["K"])
    T_wc = np.array(labels["camera"]["T_world_from_cam"])
    assert np.allclose(T_wc[:3, :3] @ T_wc[:3, :3].T, np.eye(3), atol=1e-6)
    listed = {o["instance_id"] for o in labels["objects"]}
    assert listed == set(np.unique(seg).tolist()) - {0}
    for o in labels["objects"]:
        mask = seg == o["instance_id"]
        ys, xs = np.nonzero(mask)
        x, y, w, h = o["bbox"]
        x0, y0 = xs.min(), ys.min()
        assert [x, y, w, h] == [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
        assert o["area"] == mask.sum() > 0
        assert 0.0 < o["visibility"] <= 1.0
        assert labels["classes"][o["class_id"]] == o["class_name"]
        T = np.array(o["pose_cam_from_obj"])
        u, v = K[0, 0] * T[0, 3] / T[2, 3] + K[0, 2], K[1, 1] * T[1, 3] / T[2, 3] + K[1, 2]
        assert o["center_px"] == pytest.approx([u, v], abs=1e-3)
        assert o["center_depth_m"] == pytest.approx(T[2, 3], abs=1e-6)
        # The projected 3D box encloses the visible mask (pose + size are those rendered).
        corners = CORNER_SIGNS * np.array(o["size_m"]) / 2 @ T[:3, :3].T + T[:3, 3]
        uv = corners[:, :2] / corners[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        assert xs.min() >= uv[:, 0].min() - 1 and xs.max() <= uv[:, 0].max() + 1
        assert ys.min() >= uv[:, 1].min() - 1 and ys.max() <= uv[:, 1].max() + 1
        for (ku, kv, vis), (pu, pv) in zip(o["keypoints"], uv):
            inside = 0 <= round(pu) < W and 0 <= round(pv) < H
            assert (vis > 0) == inside
            if vis:
                assert [ku, kv] == pytest.approx([pu, pv], abs=1e-3)
        # Depth on the object is metric z and close to the object's distance.
        assert np.all(depth[mask] > 0)
        assert abs(np.median(depth[mask]) - T[2, 3]) < np.linalg.norm(o["size_m"])


def test_labels_match_masks_and_pinhole_math():
    env = make()
    try:
        for seed in range(3):
            obs, info = env.reset(seed=seed)
            _check_labels_against_masks(obs, info["labels"])
            assert any(o["is_target"] for o in info["labels"]["objects"]) or seed
    finally:
        env.close()


@pytest.mark.parametrize("cx,cy", [(31.5, 23.5), (40.3, 17.8), (12.2, 35.6)])
def test_known_point_lands_in_segmentation(cx, cy):
    env = make(sphere_scene(cx=cx, cy=cy))
    try:
        obs, info = env.reset(seed=0)
        lab = info["labels"]
        (ball,) = lab["objects"]
        K = np.array(lab["camera"]["K"])
        assert K[0, 2] == pytest.approx(cx) and K[1, 2] == pytest.approx(cy)
        # Pinhole math by hand from the world pose: sphere centre rests at radius height.
        T_cw = np.linalg.inv(np.array(lab["camera"]["T_world_from_cam"]))
        T_wo = np.array(lab["camera"]["T_world_from_cam"]) @ np.array(ball["pose_cam_from_obj"])
        assert T_wo[2, 3] == pytest.approx(0.02, abs=2e-3)
        X = T_cw @ T_wo[:, 3]
        u, v = K[0, 0] * X[0] / X[2] + cx, K[1, 1] * X[1] / X[2] + cy
        assert ball["center_px"] == pytest.approx([u, v], abs=1e-3)
        seg = obs["segmentation"]
        assert seg[round(v), round(u)] == ball["instance_id"]
        # The sphere's silhouette is centred on the projected centre (to within a pixel).
        ys, xs = np.nonzero(seg == ball["instance_id"])
        assert abs(xs.mean() - u) < 1.0 and abs(ys.mean() - v) < 1.0
        assert ball["visibility"] == 1.0
    finally:
        env.close()


def test_visibility_equals_brute_force_alone_render():
    """Visibility labels vs rendering each object with every other object removed."""
    scene = yaml.safe_load((ROOT / "configs/scenes/visp_cube.yaml").read_text())
    scene["physics"]["settle_steps"] = 30
    env = gym.make(TABLETOP, scene=scene, width=80, height=60)
    u = env.unwrapped
    try:
        occluded = 0
        for seed in range(4):  # two views of two scenes (scene 1 has the tube in front)
            obs, info = env.reset(seed=seed, options={"scene_seed": seed // 2})
            bodies = [o.body for o in u._objects]
            for lab in info["labels"]["objects"]:
                full = pixels_alone(u, bodies[lab["instance_id"] - 1], bodies)
                assert lab["visibility"] == pytest.approx(min(1.0, lab["area"] / full), abs=1e-6)
                occluded += lab["visibility"] < 1.0
        assert occluded > 0  # the tall tube hides part of something in these seeds
    finally:
        env.close()


def test_visibility_skips_renders_when_nothing_is_in_front(monkeypatch):
    """Overlapping boxes alone don't cost a crop render: the frame's ids and depth must show an
    occluder in front first.  Labels still equal the brute-force render of each object alone."""
    import sim2real_envs.tabletop as tabletop

    calls = {"tested": 0, "in_front": 0, "renders": 0}
    shows = tabletop._shows_in_front

    def counting_shows(*a):
        calls["tested"] += 1
        hit = shows(*a)
        calls["in_front"] += hit
        return hit

    monkeypatch.setattr(tabletop, "_shows_in_front", counting_shows)
    scene = default_scene()
    scene["num_distractors"] = [3, 3]  # crowded: many overlapping boxes
    env = make(scene)
    u = env.unwrapped
    render_alone = u._render_alone

    def counting_render(*a):
        calls["renders"] += 1
        return render_alone(*a)

    u._render_alone = counting_render
    try:
        for seed in range(6):
            _, info = env.reset(seed=seed, options={"scene_seed": seed // 3})
            bodies = [o.body for o in u._objects]
            for lab in info["labels"]["objects"]:
                full = pixels_alone(u, bodies[lab["instance_id"] - 1], bodies)
                assert lab["visibility"] == pytest.approx(min(1.0, lab["area"] / full), abs=1e-6)
    finally:
        env.close()
    assert calls["tested"] > calls["in_front"]  # some overlaps were settled without a render
    assert calls["renders"] <= calls["in_front"]


def _reset_each(*scenes, seed: int = 4) -> list:
    """``env.reset(seed)`` of a fresh env per scene: same seed, so only the scenes differ."""
    outs = []
    for scene in scenes:
        env = make(scene)
        try:
            outs.append(env.reset(seed=seed))
        finally:
            env.close()
    return outs


def test_postprocess_changes_rgb_only_and_grayscale():
    plain = default_scene()
    plain["postprocess"] = {"enabled": False}
    noisy = default_scene()
    noisy["postprocess"] = {"enabled": True, "noise_prob": 1.0, "grayscale": True}
    (o1, i1), (o2, i2) = _reset_each(plain, noisy)
    assert json.dumps(i1["labels"]) == json.dumps(i2["labels"])
    assert o1["segmentation"].tobytes() == o2["segmentation"].tobytes()
    assert o1["rgb"].tobytes() != o2["rgb"].tobytes()
    assert i2["grayscale"] and np.array_equal(o2["rgb"][..., 0], o2["rgb"][..., 1])


def test_render_raw_and_close():
    env = make(render_mode="rgb_array")
    u = env.unwrapped
    obs, _ = env.reset(seed=0)
    assert np.array_equal(env.render(), obs["rgb"])
    w, h, rgba, _, _ = u.render_raw()
    assert (w, h) == (W, H)
    env.close()
    assert u.client is None
    env.close()  # idempotent


# Independent of pybullet: can this machine's libEGL enumerate a device and initialise a display on it
# (what pybullet's eglRenderer plugin does)? Run in a child so a broken driver cannot take pytest down.
_EGL_PROBE = r"""
import ctypes, sys
try:
    egl = ctypes.CDLL("libEGL.so.1")
except OSError as e:
    sys.exit(f"no libEGL: {e}")
gpa = egl.eglGetProcAddress
gpa.restype, gpa.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
q, g = gpa(b"eglQueryDevicesEXT"), gpa(b"eglGetPlatformDisplayEXT")
if not q or not g:
    sys.exit("libEGL lacks the device extensions")
query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                         ctypes.POINTER(ctypes.c_int))(q)
display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)(g)
devs, n = (ctypes.c_void_p * 16)(), ctypes.c_int()
if not query(16, devs, ctypes.byref(n)) or n.value == 0:
    sys.exit("no EGL device")
egl.eglInitialize.restype = ctypes.c_uint
egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
for i in range(n.value):
    d = display(0x313F, devs[i], None)  # EGL_PLATFORM_DEVICE_EXT
    major, minor = ctypes.c_int(), ctypes.c_int()
    if d and egl.eglInitialize(d, ctypes.byref(major), ctypes.byref(minor)):
        print(f"EGL {major.value}.{minor.value} on device {i} of {n.value}")
        sys.exit(0)
sys.exit("no EGL device initialises")
"""


def _egl_available() -> tuple[bool, str]:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _EGL_PROBE], capture_output=True, text=True, timeout=60)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def test_egl_renderer_matches_this_machines_egl():
    available, why = _egl_available()
    if not available:
        with pytest.raises(RuntimeError, match="EGL renderer requested but not available"):
            make(renderer="egl")
        return
    env = make(renderer="egl")  # the probe initialised EGL here, so the env must render with it
    try:
        assert env.unwrapped._egl_plugin >= 0, why
        obs, info = env.reset(seed=0)
        _check_labels_against_masks(obs, info["labels"])
    finally:
        env.close()


def test_egl_missing_is_a_clear_error_not_an_exit():
    """With no EGL vendor library, pybullet's plugin would exit() the process; the env must raise instead."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests/envs')\n"
            "import gymnasium as gym\n"
            "from envtest_scenes import default_scene\n"
            "try:\n"
            "    gym.make('" + TABLETOP + "', scene=default_scene(), width=32, height=24, renderer='egl')\n"
            "except RuntimeError as e:\n"
            "    print('RAISED', e)\n")
    env = dict(os.environ, __EGL_VENDOR_LIBRARY_FILENAMES=str(ROOT / "no_such_vendor.json"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "RAISED EGL renderer requested but not available" in proc.stdout, proc.stdout + proc.stderr


def _frame_bytes(obs, info) -> bytes:
    return b"".join(obs[k].tobytes() for k in sorted(obs)) + json.dumps(info["labels"]).encode()


def _views_scene():
    """Textured table/background and a jittered textured prop: all scenery the render world keeps."""
    scene = default_scene()
    scene["props"] = [{"size": [0.21, 0.297, 0.001], "position_jitter_m": [0.05, 0.05, 0.0],
                       "yaw_deg": [-30, 30], "appearance": {"randomize": True, "texture_prob": 0.5}}]
    return scene


def test_views_of_a_scene_same_bytes_fresh_or_reused_env():
    """reset(seed=view, options={"scene_seed": k}): a fresh env renders what a reused one renders."""
    scene = _views_scene()
    reused = make(scene)
    try:
        frames = {v: _frame_bytes(*reused.reset(seed=v, options={"scene_seed": 3})) for v in range(3)}
        assert reused.unwrapped.scene_seed == 3
        assert len(set(frames.values())) == 3  # each view is another camera, light and noise
        # Other scenes, a step (physics moved: the next reset must rebuild), then scene 3 again.
        for k in (8, 9):
            reused.reset(seed=0, options={"scene_seed": k})
        reused.step(0)
        assert reused.unwrapped.scene_seed is None
        assert _frame_bytes(*reused.reset(seed=2, options={"scene_seed": 3})) == frames[2]
    finally:
        reused.close()
    fresh = make(scene)
    try:
        assert _frame_bytes(*fresh.reset(seed=1, options={"scene_seed": 3})) == frames[1]
    finally:
        fresh.close()


def test_views_share_the_scene_and_move_the_camera():
    env = make(_views_scene())
    try:
        _, a = env.reset(seed=0, options={"scene_seed": 5})
        _, b = env.reset(seed=1, options={"scene_seed": 5})
        _, c = env.reset(seed=1, options={"scene_seed": 6})

        def world(info):
            T_wc = np.array(info["labels"]["camera"]["T_world_from_cam"])
            return {o["instance_id"]: (o["class_name"], T_wc @ np.array(o["pose_cam_from_obj"]))
                    for o in info["labels"]["objects"]}

        wa, wb = world(a), world(b)
        for iid in set(wa) & set(wb):
            assert wa[iid][0] == wb[iid][0] and np.allclose(wa[iid][1], wb[iid][1], atol=1e-6)
        cams = [np.array(i["labels"]["camera"]["T_world_from_cam"]) for i in (a, b, c)]
        assert not np.allclose(cams[0], cams[1])
        assert np.allclose(cams[1], cams[2])  # the view comes from `seed` alone
    finally:
        env.close()


def test_reset_options_are_checked():
    env = make(sphere_scene())
    try:
        with pytest.raises(ValueError, match="unknown reset option"):
            env.reset(seed=0, options={"scene": 1})
        with pytest.raises(ValueError, match="scene_seed.*integer >= 0"):
            env.reset(seed=0, options={"scene_seed": -1})
        env.reset(seed=0, options={"scene_seed": None})  # None = drawn from seed, as without options
    finally:
        env.close()


def test_broken_asset_is_never_used():
    """pybullet_data's random_urdfs/168 has NaN vertices: it would fall forever and NaN the labels."""
    scene = sphere_scene()
    scene["objects"] = [{"class": "blob", "urdf": "random_urdfs/16[78]/*.urdf"}]
    env = make(scene)
    try:
        for seed in range(6):
            _, info = env.reset(seed=seed)
            assert env.unwrapped._objects[0].source.endswith("167.urdf")
            for o in info["labels"]["objects"]:
                assert np.isfinite(np.array(o["pose_cam_from_obj"])).all()
    finally:
        env.close()
    scene["objects"] = [{"class": "blob", "urdf": "random_urdfs/168/168.urdf"}]
    env = make(scene)
    try:
        with pytest.raises(SceneConfigError, match=r"scene.objects\[0\].urdf.*168.urdf"):
            env.reset(seed=0)
    finally:
        env.close()


def test_no_pybullet_banner_on_stdout(capfd):
    from sim2real_envs.bullet import connect

    connect().disconnect()
    out, err = capfd.readouterr()
    assert "argv[0]" not in out and "build time" not in out + err


def test_postprocess_transforms_are_drawn_independently():
    """One seed per frame drives all transforms in turn: every on/off combination occurs."""
    from sim2real_envs import postprocess
    from sim2real_envs.config import PostprocessConfig

    pipe = postprocess.build(PostprocessConfig(noise_prob=0.5, blur_prob=0.3, jpeg_prob=0.3,
                                               color_jitter_prob=0.5))
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    combos = set()
    for seed in range(120):
        postprocess.apply(pipe, img, seed)
        combos.add(tuple(bool(t.params) for t in pipe.transforms))
    assert len(combos) >= 12  # of 16; one shared seed per transform gave only 3
    assert np.array_equal(postprocess.apply(pipe, img, 7), postprocess.apply(pipe, img, 7))


@pytest.mark.parametrize("shape", [(40, 50, 3), (40, 50), (40, 50, 1)])
def test_banked_noise_keeps_shape_and_std(shape):
    import random

    from sim2real_envs.postprocess import A, BankedGaussNoise

    pipe = A.Compose([BankedGaussNoise(std_range=(0.05, 0.05), p=1.0)], seed=0)
    pipe.set_random_state(np.random.default_rng(1), random.Random(1))
    img = np.full(shape, 128, np.uint8)
    out = pipe(image=img)["image"]
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out.astype(float).std() == pytest.approx(0.05 * 255, rel=0.15)


def test_postprocess_gamma_is_the_camera_tone_curve():
    """gamma [g, g] maps every pixel v to 255 (v/255)^g (> 1 darkens); [1, 1] adds no transform, so a
    scene without the key renders the bytes it always did."""
    from sim2real_envs import postprocess
    from sim2real_envs.config import PostprocessConfig

    off = {"noise_prob": 0.0, "blur_prob": 0.0, "jpeg_prob": 0.0, "color_jitter_prob": 0.0}
    assert postprocess.build(PostprocessConfig(**off)) is None          # default gamma: nothing to do
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    dark = postprocess.apply(postprocess.build(PostprocessConfig(gamma=[1.5, 1.5], **off)), img, 3)
    want = 255.0 * (img / 255.0) ** 1.5
    assert np.abs(dark.astype(float) - want).max() <= 1.0
    assert dark.mean() < img.mean() - 10
    with_jitter = PostprocessConfig(noise_prob=0.5, blur_prob=0.3)
    assert "RandomGamma" not in [type(t).__name__ for t in postprocess.build(with_jitter).transforms]


def test_scene_gamma_darkens_rgb_only():
    bright, dark = default_scene(), default_scene()
    bright["postprocess"] = {"enabled": True, "noise_prob": 0.0, "blur_prob": 0.0, "jpeg_prob": 0.0,
                             "color_jitter_prob": 0.0}
    dark["postprocess"] = {**bright["postprocess"], "gamma": [1.6, 1.6]}
    (o1, i1), (o2, i2) = _reset_each(bright, dark)
    assert json.dumps(i1["labels"]) == json.dumps(i2["labels"])
    assert o2["rgb"].mean() < o1["rgb"].mean() - 5
