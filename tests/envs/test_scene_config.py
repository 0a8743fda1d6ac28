from pathlib import Path

import numpy as np
import pytest
import yaml

from envtest_scenes import default_scene, sphere_scene
from sim2real_envs.config import DEFAULT_SCENE_YAML, SceneConfigError, load_scene
from sim2real_envs.tabletop import TabletopEnv, base_intrinsics

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_matches_embedded_default():
    on_disk = yaml.safe_load((ROOT / "configs/scenes/default.yaml").read_text())
    assert on_disk == yaml.safe_load(DEFAULT_SCENE_YAML)
    cfg = load_scene(None)
    assert {"duck", "mug", "cube", "clutter"} <= set(cfg.class_names)


def test_visp_cube_twin_loads_with_real_intrinsics_scaled():
    cfg = load_scene(ROOT / "configs/scenes/visp_cube.yaml")
    assert cfg.class_names[0] == "cube" and cfg.postprocess.grayscale
    intr = base_intrinsics(cfg)
    assert (intr.width, intr.height) == (320, 240)
    assert intr.fx == pytest.approx(547.7368 / 2)
    assert intr.cx == pytest.approx((338.7037 + 0.5) / 2 - 0.5)


def test_unknown_key_names_dotted_key_and_suggests():
    scene = default_scene()
    scene["camera"]["fxx"] = 500.0
    with pytest.raises(SceneConfigError) as e:
        load_scene(scene)
    assert e.value.key == "scene.camera.fxx"
    assert "'fx'" in str(e.value)


def test_wrong_type_names_key():
    scene = sphere_scene()
    scene["camera"]["fx"] = "big"
    with pytest.raises(SceneConfigError) as e:
        load_scene(scene)
    assert e.value.key == "scene.camera.fx" and "number" in str(e.value)


def test_bad_range_names_key():
    scene = default_scene()
    scene["camera"]["distance_m"] = [0.9, 0.5]
    with pytest.raises(SceneConfigError, match="scene.camera.distance_m.*lo <= hi"):
        load_scene(scene)
    scene = default_scene()
    scene["postprocess"]["noise_prob"] = 1.5
    with pytest.raises(SceneConfigError, match=r"scene.postprocess.noise_prob.*\[0.0, 1.0\]"):
        load_scene(scene)
    scene = default_scene()
    scene["objects"][0]["role"] = "enemy"
    with pytest.raises(SceneConfigError, match=r"scene.objects\[0\].role"):
        load_scene(scene)


def test_missing_mesh_file_names_file_and_key(tmp_path):
    scene = sphere_scene()
    scene["objects"] = [{"class": "part", "mesh": str(tmp_path / "nope.obj")}]
    with pytest.raises(SceneConfigError) as e:
        TabletopEnv(scene=scene)
    assert e.value.key == "scene.objects[0].mesh" and "nope.obj" in str(e.value)


def test_incomplete_intrinsics_and_class_list():
    scene = sphere_scene()
    del scene["camera"]["cy"]
    with pytest.raises(SceneConfigError, match="scene.camera.cy"):
        load_scene(scene)
    scene = sphere_scene()
    scene["classes"] = ["cup"]
    with pytest.raises(SceneConfigError, match=r"scene.objects\[0\].class"):
        load_scene(scene)


def test_opencv_yaml_intrinsics(tmp_path):
    # The layout of OpenCV's calibration sample output (samples/data/left_intrinsics.yml):
    # a "%YAML:1.0" header that yaml.safe_load rejects, and !!opencv-matrix nodes.
    path = tmp_path / "calib.yml"
    path.write_text(
        "%YAML:1.0\n---\nnframes: 13\nimage_width: 640\nimage_height: 480\n"
        "camera_matrix: !!opencv-matrix\n   rows: 3\n   cols: 3\n   dt: d\n"
        "   data: [ 530.5, 0., 331.25, 0.,\n       528.0, 241.75, 0., 0., 1. ]\n"
        "distortion_coefficients: !!opencv-matrix\n   rows: 5\n   cols: 1\n   dt: d\n"
        "   data: [ 0., 0., 0., 0., 0. ]\n")
    scene = sphere_scene()
    scene["camera"] = {"opencv_yaml": str(path), "scale": 0.1}
    intr = base_intrinsics(load_scene(scene))
    assert (intr.width, intr.height) == (64, 48)
    assert intr.fx == pytest.approx(530.5 * 0.1) and intr.fy == pytest.approx(528.0 * 0.1)
    assert intr.cx == pytest.approx((331.25 + 0.5) * 0.1 - 0.5)
    # A stereo file names its matrices differently: pick the node, give the size.
    scene["camera"] = {"opencv_yaml": str(path), "opencv_node": "M1", "width": 64, "height": 48}
    with pytest.raises(SceneConfigError, match="scene.camera.opencv_node"):
        base_intrinsics(load_scene(scene))


def test_yaml_path_resolves_relative_mesh(tmp_path):
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes" / "tri.obj").write_text(
        "v 0 0 0\nv 0.05 0 0\nv 0 0.05 0\nv 0 0 0.05\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    scene = sphere_scene()
    scene["objects"] = [{"class": "part", "mesh": "meshes/tri.obj", "mesh_scale": 2.0}]
    (tmp_path / "scene.yaml").write_text(yaml.safe_dump(scene))
    env = TabletopEnv(scene=str(tmp_path / "scene.yaml"))
    try:
        _, info = env.reset(seed=0)
        sizes = [o["size_m"] for o in info["labels"]["objects"]]
        assert sizes and np.allclose(sizes[0], [0.1, 0.1, 0.1], atol=1e-6)
    finally:
        env.close()


def test_texture_folder_fixed_texture_and_static_object(tmp_path):
    from PIL import Image

    folder = tmp_path / "textures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    scene = sphere_scene()
    scene["objects"] = [{"class": "post", "shape": "cylinder", "radius": 0.02, "height": 0.1,
                         "mass": 0.0, "appearance": {"texture_prob": 1.0, "patterns": [],
                                                     "folder": str(folder)}}]
    scene["table"] = {"appearance": {"randomize": False, "texture": str(folder / "0.png")}}
    env = TabletopEnv(scene=scene)
    try:
        obs, info = env.reset(seed=0)
        (post,) = info["labels"]["objects"]
        T_wo = np.array(info["labels"]["camera"]["T_world_from_cam"]) @ np.array(
            post["pose_cam_from_obj"])
        assert T_wo[2, 3] == pytest.approx(0.05, abs=1e-6)  # static: stands on the table
        # Textured surfaces are not flat colours.
        assert len(np.unique(obs["rgb"][obs["segmentation"] == 1].reshape(-1, 3), axis=0)) > 3
    finally:
        env.close()
    scene["table"] = {"appearance": {"folder": str(tmp_path / "missing")}}
    with pytest.raises(SceneConfigError, match="scene.table.appearance.folder"):
        load_scene(scene)
