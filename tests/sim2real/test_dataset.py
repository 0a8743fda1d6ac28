"""COCO reader: sim layout, the real ViSP labels, bad inputs, pixel-frame mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim2real.data.real_visp import visp_cube_labels_path
from sim2real.data.dataset import (CocoDataset, DatasetError, check_same_classes, collate, geometry_of,
                                   predictions_to_original, targets_to_input)
from sim2real.models.preprocess import Preprocess
from sim2real.train.toy_data import write_shapes_dataset

REAL_JSON = visp_cube_labels_path()
REAL_ROOT = Path("/usr/share/visp-images-data/ViSP-images")


@pytest.fixture
def toy(tmp_path):
    return write_shapes_dataset(tmp_path / "toy", num_images=6, size=(64, 48), seed=1)


def test_reads_generator_layout_and_picks_target(toy):
    ds = CocoDataset(toy)
    assert ds.classes == ["square", "disc", "triangle"]
    assert len(ds) == 6 and ds.num_without_target == 0
    assert list(ds.labels) == [0, 1, 2, 0, 1, 2]  # the target, not the distractor
    data = json.loads((toy / "annotations.json").read_text())
    targets = [a for a in data["annotations"] if a["is_target"]]
    x, y, w, h = targets[0]["bbox"]
    np.testing.assert_allclose(ds.boxes[0], [x, y, x + w, y + h])
    assert ds.keypoints.shape == (6, 8, 2) and (ds.kp_vis == 2).all()
    assert ds[0]["image"].shape == (48, 64, 3)


def test_largest_is_target_annotation_wins(tmp_path, toy):
    data = json.loads((toy / "annotations.json").read_text())
    big = dict(data["annotations"][1], id=999, area=10**6, bbox=[1, 2, 30, 20], category_id=3)
    data["annotations"].append(big)
    data["annotations"].append(dict(big, id=1000, area=10**7, is_target=False, category_id=2))
    (toy / "annotations.json").write_text(json.dumps(data))
    ds = CocoDataset(toy)
    assert ds.labels[0] == 2
    np.testing.assert_allclose(ds.boxes[0], [1, 2, 31, 22])


def test_reads_real_visp_labels():
    ds = CocoDataset(REAL_JSON, image_root=REAL_ROOT)
    assert ds.classes == ["cube"] and len(ds) == 100
    img = ds[0]["image"]
    assert img.shape == (480, 640) and img.dtype == np.uint8  # grayscale PGM
    assert set(np.unique(ds.kp_vis)) <= {1, 2}
    np.testing.assert_allclose(ds.centers[0], [375.535, 273.927], atol=1e-3)
    # Mapped onto a model's class list by name (no is_target field -> largest known category).
    mapped = CocoDataset(REAL_JSON, image_root=REAL_ROOT, classes=["cylinder", "cube"])
    assert (mapped.labels == 1).all()


def test_folder_without_annotations(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        CocoDataset(tmp_path / "empty")


def test_missing_image_file(toy):
    (toy / "images" / "000003.png").unlink()
    with pytest.raises(FileNotFoundError, match="000003.png"):
        CocoDataset(toy)


def test_bad_annotation_file(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="categories"):
        CocoDataset(f)
    f.write_text("{not json")
    with pytest.raises(DatasetError, match="a.json"):
        CocoDataset(f)
    video = tmp_path / "clip.avi"  # a video given where labels are expected: say so, not "utf-8 codec"
    video.write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST\xff\xfe\x80\x81")
    with pytest.raises(DatasetError, match=r"clip.avi: not a COCO JSON file but binary data"):
        CocoDataset(video)


def test_class_list_mismatch_names_both():
    with pytest.raises(DatasetError, match=r"\['a', 'b'\].*\['a', 'c'\]"):
        check_same_classes(["a", "b"], ["a", "c"])


def test_corrupt_image_is_skipped_and_counted(toy):
    (toy / "images" / "000002.png").write_bytes(b"\x89PNG truncated")
    ds = CocoDataset(toy)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == [2] and ds.corrupt == {2}
    assert len(batch["image"]) == 5


def test_targets_in_input_pixels_and_back():
    pre = Preprocess({"input_size": (3, 48, 64)}, input_hw=(48, 64))  # 640x480 -> 64x48: scale 0.1
    geom = geometry_of(pre.geometry((480, 640)))[None]
    targets = {"label": np.array([1]), "center": np.array([[319.5, 239.5]]), "box": np.array([[100.0, 50.0, 300.0, 250.0]]),
               "keypoints": np.array([[[100.0, 50.0], [299.5, 249.5]]]), "kp_vis": np.array([[2, 1]])}
    t = targets_to_input(targets, geom, pre.input_hw)
    np.testing.assert_allclose(t["center"].numpy(), [[31.5, 23.5]], atol=1e-5)  # image centre -> input centre
    np.testing.assert_allclose(t["box"].numpy(), [[10.0, 5.0, 30.0, 25.0]], atol=1e-5)
    assert t["keypoints"].shape == (1, 2, 3) and t["keypoints"][0, :, 2].tolist() == [2, 1]
    assert t["class"].tolist() == [1] and t["has_loc"].all()
    pred = {"center": t["center"].numpy(), "box": t["box"].numpy(), "keypoints": t["keypoints"][..., :2].numpy()}
    back = predictions_to_original(pred, geom, pre.input_hw)
    np.testing.assert_allclose(back["center"], targets["center"], atol=1e-4)
    np.testing.assert_allclose(back["box"], targets["box"], atol=1e-4)
    np.testing.assert_allclose(back["keypoints"], targets["keypoints"], atol=1e-4)


def test_item_carries_model_input_targets(toy):
    pre = Preprocess({"input_size": (3, 96, 128)}, input_hw=(96, 128))  # 64x48 -> 128x96: scale 2
    ds = CocoDataset(toy, preprocess=pre)
    item = ds[0]
    assert item["image"].shape == (3, 96, 128)
    np.testing.assert_allclose(item["box"].numpy(), ds.boxes[0] * 2, atol=1e-5)
    np.testing.assert_allclose(item["center"].numpy(), (ds.centers[0] + 0.5) * 2 - 0.5, atol=1e-5)
