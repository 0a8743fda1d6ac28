"""Object symmetries in scene files and labels (issue 13)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envtest_scenes import H, W, sphere_scene
from sim2real_envs.config import SceneConfigError, load_scene

TABLETOP = "sim2real_envs:sim2real/Tabletop-v0"


def _scene(**obj):
    scene = sphere_scene()
    scene["objects"] = [{"class": "thing", "shape": "box", "size": [0.03, 0.03, 0.03], **obj}]
    return scene


@pytest.mark.parametrize("obj, expected", [
    ({}, "box"),                                                 # default from the shape
    ({"shape": "cylinder", "radius": 0.02, "height": 0.05}, "cylinder"),
    ({"shape": "sphere", "radius": 0.02}, "sphere"),
    ({"symmetry": "none"}, "none"),                              # printed faces: declared asymmetric
    ({"symmetry": [[3, 0, 1, 2, 7, 4, 5, 6]]}, [[3, 0, 1, 2, 7, 4, 5, 6]]),
])
def test_labels_carry_the_resolved_symmetry(obj, expected):
    scene = _scene(**obj)
    if "radius" in obj:
        scene["objects"][0].pop("size")
    env = gym.make(TABLETOP, scene=scene, width=W, height=H)
    _, info = env.reset(seed=0)
    objs = info["labels"]["objects"]
    assert objs and all(o["symmetry"] == expected for o in objs)
    env.close()


def test_mesh_objects_default_to_no_symmetry():
    cfg = load_scene({**_scene(), "objects": [{"class": "duck", "urdf": "duck_vhacd.urdf"}]})
    assert cfg.objects[0].resolved_symmetry == "none"


@pytest.mark.parametrize("value, key", [
    ("donut", "scene.objects[0].symmetry"),
    ([[0, 0, 1, 2, 3, 4, 5, 6]], "scene.objects[0].symmetry[0]"),
    ([], "scene.objects[0].symmetry"),
    (3, "scene.objects[0].symmetry"),
])
def test_bad_symmetry_names_the_key(value, key):
    with pytest.raises(SceneConfigError) as e:
        load_scene(_scene(symmetry=value))
    assert e.value.key == key
