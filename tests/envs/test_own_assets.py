"""A user's own assets next to their scene file (outside configs/): a URDF that references its own
mesh by a relative path, an STL mesh, a texture folder and a fixed texture. The assets are made in
the test's tmp folder (numpy + PIL, no trimesh needed)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from sim2real_envs.tabletop import TabletopEnv

from envtest_scenes import sphere_scene

# A 4 x 2 x 1 cm box (centred, z up) as 12 triangles.
EXT = np.array([0.04, 0.02, 0.01])


def box_triangles(ext=EXT) -> np.ndarray:
    """(12, 3, 3) outward-facing triangles of a centred box."""
    c = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * ext / 2
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return np.array([[c[a], c[b], c[d]] for a, b, cc, d in quads for b, d in ((b, cc), (cc, d))])


def write_obj(path, tris) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for t in tris for x, y, z in t]
    lines += [f"f {3 * i + 1} {3 * i + 2} {3 * i + 3}" for i in range(len(tris))]
    path.write_text("\n".join(lines) + "\n")


def write_binary_stl(path, tris) -> None:
    rec = np.zeros(len(tris), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = tris
    n = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    rec["n"] = n / np.linalg.norm(n, axis=1, keepdims=True)
    path.write_bytes(b"\0" * 80 + np.uint32(len(tris)).tobytes() + rec.tobytes())


URDF = """<?xml version="1.0"?>
<robot name="part">
  <link name="base">
    <inertial><mass value="0.1"/><inertia ixx="1e-4" iyy="1e-4" izz="1e-4" ixy="0" ixz="0" iyz="0"/></inertial>
    <visual><geometry><mesh filename="meshes/part.obj" scale="1 1 1"/></geometry></visual>
    <collision><geometry><box size="0.04 0.02 0.01"/></geometry></collision>
  </link>
</robot>
"""


def run_scene(tmp_path, scene: dict) -> tuple[dict, dict]:
    """Write ``scene`` as tmp_path/project/scene.yaml and render one frame from that path."""
    path = tmp_path / "project" / "scene.yaml"
    path.write_text(yaml.safe_dump(scene))
    env = TabletopEnv(scene=str(path))
    try:
        return env.reset(seed=0)
    finally:
        env.close()


@pytest.fixture
def project(tmp_path):
    (tmp_path / "project").mkdir()
    return tmp_path / "project"


def test_urdf_with_its_own_relative_mesh(tmp_path, project):
    """urdf: assets/part.urdf (relative to the scene file) whose <mesh> is meshes/part.obj
    relative to the URDF: pybullet resolves it from the URDF's folder; labels use its size."""
    (project / "assets" / "meshes").mkdir(parents=True)
    write_obj(project / "assets" / "meshes" / "part.obj", box_triangles())
    (project / "assets" / "part.urdf").write_text(URDF)
    scene = sphere_scene()
    scene["objects"] = [{"class": "part", "urdf": "assets/part.urdf", "scale": [2.0, 2.0]}]
    obs, info = run_scene(tmp_path, scene)
    (obj,) = info["labels"]["objects"]
    assert obj["class_name"] == "part"
    assert np.allclose(obj["size_m"], 2 * EXT, atol=1e-6)
    assert obj["area"] > 20 and (obs["segmentation"] == 1).sum() == obj["area"]


@pytest.mark.parametrize("fmt", ["stl_binary", "stl_ascii"])
def test_stl_mesh(tmp_path, project, fmt):
    tris = box_triangles()
    if fmt == "stl_binary":
        write_binary_stl(project / "part.stl", tris)
    else:
        facets = "".join("facet normal 0 0 0\n outer loop\n" + "".join(
            f"  vertex {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in t) + " endloop\nendfacet\n"
            for t in tris)
        (project / "part.stl").write_text(f"solid part\n{facets}endsolid part\n")
    scene = sphere_scene()
    scene["objects"] = [{"class": "part", "mesh": "part.stl", "mesh_scale": 1.5}]
    obs, info = run_scene(tmp_path, scene)
    (obj,) = info["labels"]["objects"]
    assert np.allclose(obj["size_m"], 1.5 * EXT, atol=1e-6)
    assert obj["area"] > 10
    # Resting on the table: the box's bottom (its centre minus half its height) at z = 0.
    T_wo = np.array(info["labels"]["camera"]["T_world_from_cam"]) @ np.array(obj["pose_cam_from_obj"])
    assert T_wo[2, 3] == pytest.approx(0.75 * EXT[2], abs=3e-3)


def test_texture_folder_and_texture_next_to_the_scene_file(tmp_path, project):
    """folder: textures and texture: looks/table.png, both relative to the scene file; the only
    image in the folder is magenta, the table's texture is cyan: their pixels show it."""
    (project / "textures").mkdir()
    (project / "looks").mkdir()
    Image.fromarray(np.full((16, 16, 3), (255, 0, 255), np.uint8)).save(
        project / "textures" / "magenta.png")
    Image.fromarray(np.full((16, 16, 3), (0, 255, 255), np.uint8)).save(
        project / "looks" / "table.png")
    scene = sphere_scene(width=96, height=72)
    scene["objects"] = [{"class": "block", "shape": "box", "size": [0.05, 0.05, 0.05], "appearance": {
        "random_color": False, "color": [1, 1, 1, 1], "texture_prob": 1.0, "patterns": [],
        "folder": "textures"}}]
    scene["table"] = {"appearance": {"randomize": False, "color": [1, 1, 1, 1],
                                     "texture": "looks/table.png"}}
    obs, info = run_scene(tmp_path, scene)
    rgb, seg = obs["rgb"].astype(int), obs["segmentation"]
    obj = rgb[seg == 1]
    assert len(obj) > 20
    r, g, b = np.median(obj, axis=0)
    assert r > 2 * g + 20 and b > 2 * g + 20, (r, g, b)  # magenta
    table = rgb[(seg == 0) & (obs["depth"] > 0)]
    r, g, b = np.median(table, axis=0)
    assert g > 2 * r + 20 and b > 2 * r + 20, (r, g, b)  # cyan
