"""Deployment image sets (drift reference, int8 calibration): labels without keypoints work, and an
unreadable image is skipped and counted instead of stopping the run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim2real.deploy.image_sets import load_image_set
from sim2real.train.toy_data import write_shapes_dataset


@pytest.fixture()
def toy(tmp_path):
    return write_shapes_dataset(tmp_path / "toy", num_images=6, size=(64, 48), seed=3)


def test_coco_labels_without_keypoints(toy, tmp_path):
    data = json.loads((toy / "annotations.json").read_text())
    for c in data["categories"]:
        c.pop("keypoints", None)
        c.pop("skeleton", None)
    for a in data["annotations"]:
        a.pop("keypoints", None)
        a.pop("num_keypoints", None)
    path = toy / "no_keypoints.json"
    path.write_text(json.dumps(data))
    s = load_image_set(path, max_images=4)
    assert len(s.images) == 4 and not s.skipped
    # padded instance arrays: every labelled object of the image, -1 = empty slot
    m = s.labels["label"].shape[1]
    assert s.labels["label"].shape == (4, m) and s.labels["center"].shape == (4, m, 2) and s.labels["box"].shape == (4, m, 4)
    assert (s.labels["label"] >= 0).sum() >= 4 and {"keypoints", "kp_vis", "ignore"} <= set(s.labels)


def test_unreadable_images_are_skipped_and_counted(toy, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        (folder / f"f{i}.png").write_bytes((toy / "images" / f"{i:06d}.png").read_bytes())
    (folder / "f1.png").write_bytes(b"broken")
    s = load_image_set(folder)
    assert [p.name for p in s.paths] == ["f0.png", "f2.png"] and len(s.images) == 2
    assert len(s.skipped) == 1 and "f1.png" in s.skipped[0]
    # COCO set: the labels stay aligned with the images that were read
    (toy / "images" / "000002.png").write_bytes(b"broken")
    full = load_image_set(toy)
    assert len(full.images) == len(full.paths) == len(full.labels["label"]) == 5
    assert all(p.name != "000002.png" for p in full.paths)
    for p in folder.iterdir():
        p.write_bytes(b"broken")
    with pytest.raises(ValueError, match="none of its 3 image"):
        load_image_set(folder)
    assert np.isfinite(full.labels["center"]).all()
