"""The shipped scenes (configs/scenes) give multi-object, multi-class frames (issue 12)."""

from collections import Counter
from pathlib import Path

import gymnasium as gym
import yaml

from envtest_scenes import default_scene
from sim2real_envs.config import load_scene

ROOT = Path(__file__).resolve().parents[2]
TABLETOP = "sim2real_envs:sim2real/Tabletop-v0"


def _frames(scene: dict, seeds, scene_of=None) -> list[dict]:
    """Labels of view ``seed`` of scene ``scene_of(seed)`` (default: scene ``seed``) per seed."""
    env = gym.make(TABLETOP, scene=scene, width=160)  # 160x120: small and fast
    try:
        out = []
        for seed in seeds:
            options = {"scene_seed": scene_of(seed)} if scene_of else None
            _, info = env.reset(seed=seed, options=options)
            out.append(info["labels"])
        return out
    finally:
        env.close()


def test_default_scene_classes_and_target_count():
    cfg = load_scene(None)
    targets = {o.cls for o in cfg.objects if o.role == "target"}
    assert len(targets) >= 4 and "clutter" not in targets
    assert cfg.num_targets[0] >= 2 and cfg.num_targets[1] >= 4
    assert cfg.class_names[-1] == "clutter"


def test_default_scene_frames_hold_several_targets_classes_and_duplicates():
    frames = _frames(default_scene(), range(6))
    classes_seen, dup_frames, occluded = set(), 0, 0
    for labels in frames:
        objs = labels["objects"]
        targets = [o for o in objs if o["is_target"]]
        assert len(targets) >= 2, [o["class_name"] for o in objs]
        assert all(o["class_name"] == "clutter" for o in objs if not o["is_target"])
        assert all(o["class_name"] != "clutter" for o in targets)
        per_class = Counter(o["class_name"] for o in targets)
        classes_seen |= set(per_class)
        dup_frames += max(per_class.values()) >= 2
        occluded += sum(o["visibility"] < 0.99 for o in objs)
        for o in targets:  # class ids index the frame's class list
            assert labels["classes"][o["class_id"]] == o["class_name"]
    assert len(classes_seen) >= 4, classes_seen
    assert dup_frames >= 1  # same-class duplicates occur
    assert max(len({o["class_name"] for o in f["objects"] if o["is_target"]}) for f in frames) >= 3
    assert occluded >= 1  # objects stand close enough to hide part of one another


def test_visp_twin_labels_cube_and_tube_as_targets():
    scene = yaml.safe_load((ROOT / "configs/scenes/visp_cube.yaml").read_text())
    scene["physics"]["settle_steps"] = 30
    frames = _frames(scene, range(4), scene_of=lambda s: s // 2)  # two views of two scenes
    for labels in frames:
        assert labels["classes"][:2] == ["cube", "tube"]
        targets = Counter(o["class_name"] for o in labels["objects"] if o["is_target"])
        assert targets == {"cube": 1, "tube": 1}
        for o in labels["objects"]:
            assert o["is_target"] == (o["class_name"] in ("cube", "tube"))
            assert o["class_id"] == labels["classes"].index(o["class_name"])
