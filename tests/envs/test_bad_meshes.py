"""Empty or garbage mesh files are a scene error naming the file and the scene key (issue 14),
not an internal "body N has no visual geometry to label" once pybullet has loaded nothing."""

from __future__ import annotations

import os

import pytest
import yaml

from sim2real_envs.config import SceneConfigError
from sim2real_envs.tabletop import TabletopEnv

from envtest_scenes import sphere_scene

GOOD_OBJ = "v 0 0 0\nv 0.05 0 0\nv 0 0.05 0\nv 0 0 0.05\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"

BAD_MESHES = {
    "empty.obj": b"",
    "blank.obj": b"\n  \n",
    "garbage.obj": bytes(range(256)) * 8 + b"\x00\xff not a mesh",
    "vertices_only.obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\n",
    "bad_vertex.obj": b"v 0 0 zero\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    "bad_face.obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n",
    "empty.stl": b"",
    "garbage.stl": b"\x13\x37" * 100,
    "no_triangles.stl": b"\0" * 80 + (0).to_bytes(4, "little"),
}


def _scene_with_mesh(tmp_path, name: str, data: bytes) -> str:
    (tmp_path / name).write_bytes(data)
    scene = sphere_scene()
    scene["objects"] = [{"class": "ball", "shape": "sphere", "radius": 0.02},
                        {"class": "part", "mesh": name, "role": "distractor"}]
    scene["num_distractors"] = [1, 1]
    path = tmp_path / "scene.yaml"
    path.write_text(yaml.safe_dump(scene))
    return str(path)


@pytest.mark.parametrize("name", sorted(BAD_MESHES))
def test_bad_mesh_names_the_file_and_the_key(tmp_path, name):
    scene = _scene_with_mesh(tmp_path, name, BAD_MESHES[name])
    with pytest.raises(SceneConfigError) as e:
        env = TabletopEnv(scene=scene)
        try:
            env.reset(seed=0)
        finally:
            env.close()
    msg = str(e.value)
    assert e.value.key == "scene.objects[1].mesh", msg
    assert os.path.join(str(tmp_path), name) in msg and "\n" not in msg
    assert "body" not in msg and "no visual geometry to label" not in msg


def test_a_good_mesh_still_renders(tmp_path):
    env = TabletopEnv(scene=_scene_with_mesh(tmp_path, "tri.obj", GOOD_OBJ.encode()))
    try:
        _, info = env.reset(seed=0)
    finally:
        env.close()
    assert {o["class_name"] for o in info["labels"]["objects"]} <= {"ball", "part"}
