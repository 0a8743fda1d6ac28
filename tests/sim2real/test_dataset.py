"""COCO reader: padded instances (sim layout, the real ViSP labels), ignore and negatives, bad inputs,
pixel-frame mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim2real.data.real_visp import visp_cube_labels_path
from sim2real.data.dataset import (CocoDataset, DatasetError, check_same_classes, collate, geometry_of, meta_of,
                                   targets_to_input)
from sim2real.eval.instances import instances_to_original
from sim2real.models.heads import check_targets, encode_targets
from sim2real.models.preprocess import Preprocess
from sim2real.train.toy_data import write_shapes_dataset

REAL_JSON = visp_cube_labels_path()
REAL_ROOT = Path("/usr/share/visp-images-data/ViSP-images")


@pytest.fixture
def toy(tmp_path):
    return write_shapes_dataset(tmp_path / "toy", num_images=6, size=(64, 48), seed=1)


def _anns(toy):
    data = json.loads((toy / "annotations.json").read_text())
    return data, {im["id"]: [a for a in data["annotations"] if a["image_id"] == im["id"]] for im in data["images"]}


def _xyxy(ann):
    x, y, w, h = ann["bbox"]
    return [x, y, x + w, y + h]


def test_reads_generator_layout_with_every_instance(toy):
    """Every annotation of a model class is an instance, targets and distractors alike, in file order."""
    ds = CocoDataset(toy)
    assert ds.classes == ["square", "disc", "triangle"] and ds.scored_classes == [0, 1, 2]
    assert len(ds) == 6 and ds.num_without_target == 0
    data, by_image = _anns(toy)
    t = ds.original_targets()
    assert t["label"].shape == (6, 2) and t["box"].shape == (6, 2, 4) and t["center"].shape == (6, 2, 2)
    assert t["keypoints"].shape == (6, 2, 8, 2) and (t["kp_vis"] == 2).all() and not t["ignore"].any()
    for row, im in enumerate(data["images"]):
        anns = by_image[im["id"]]
        assert [a["is_target"] for a in anns] == [False, True]   # the distractor is an object too
        assert t["label"][row].tolist() == [a["category_id"] - 1 for a in anns]
        np.testing.assert_allclose(t["box"][row], [_xyxy(a) for a in anns])
        np.testing.assert_allclose(t["center"][row], [a["center_px"] for a in anns])
    assert t["label"][:, 1].tolist() == [0, 1, 2, 0, 1, 2]  # the targets
    sub = ds.original_targets([4, 1])
    np.testing.assert_array_equal(sub["box"], t["box"][[4, 1]])
    assert ds[0]["image"].shape == (48, 64, 3)


def test_class_list_selects_the_instances(toy):
    data, _ = _anns(toy)
    big = dict(data["annotations"][1], id=999, area=10**6, bbox=[1, 2, 30, 20], category_id=3)
    data["annotations"].append(big)
    data["annotations"].append(dict(big, id=1000, area=10**7, is_target=False, category_id=2, bbox=[5, 6, 7, 8]))
    (toy / "annotations.json").write_text(json.dumps(data))
    ds = CocoDataset(toy)
    t = ds.original_targets([0])
    assert t["label"].shape == (1, 4)  # M = the most instances of one image
    assert t["label"][0].tolist()[2:] == [2, 1]
    np.testing.assert_allclose(t["box"][0, 2:], [[1, 2, 31, 22], [5, 6, 12, 14]])
    assert (ds.original_targets([1])["label"][0, 2:] == -1).all()  # padding: empty slots
    # A model's class list, mapped by name: only its classes' annotations are instances.
    only = CocoDataset(toy, classes=["triangle", "disc"])
    t = only.original_targets()
    got = {(r, int(c)) for r, row in enumerate(t["label"]) for c in row if c >= 0}
    want = {(r, {2: 1, 3: 0}[a["category_id"]]) for r, im in enumerate(data["images"])
            for a in data["annotations"] if a["image_id"] == im["id"] and a["category_id"] in (2, 3)}
    assert got == want


def test_low_visibility_instance_is_ignored_and_yields_no_positive(toy):
    """Below ``min_visibility`` (or a crowd): ``ignore``, so neither an object nor background in training."""
    data, by_image = _anns(toy)
    target = by_image[1][1]
    target["visibility"] = 0.1
    by_image[2][0]["iscrowd"] = 1
    (toy / "annotations.json").write_text(json.dumps(data))
    ds = CocoDataset(toy, preprocess=Preprocess({"input_size": (3, 96, 128)}, input_hw=(96, 128)))
    t = ds.original_targets()
    assert t["ignore"][0].tolist() == [False, True] and t["ignore"][1].tolist() == [True, False]
    assert t["ignore"].sum() == 2 and t["label"][0, 1] == target["category_id"] - 1  # still labelled
    assert not CocoDataset(toy, min_visibility=0.05).original_targets()["ignore"][0].any()
    b = collate([ds[0], ds[3]])
    assert b["ignore"].tolist() == [[False, True], [False, False]]
    enc = encode_targets(check_targets(b, 2, 8), 3, (6, 8), 16)
    assert enc["pos"].tolist() == [[True, False], [True, True]]
    assert not enc["kp_pos"][0, 1].any() and not enc["kp_rel_mask"][0, 1].any()
    # Alone in its image, the ignored object leaves no peak, only a no-loss region in its class channel.
    lab = int(b["label"][0, 1])
    alone = {**b, "label": b["label"].clone()}
    alone["label"][0, 0] = -1
    enc = encode_targets(check_targets(alone, 2, 8), 3, (6, 8), 16)
    assert not enc["pos"][0].any() and enc["heatmap"][0].max() == 0
    assert enc["hm_ignore"][0, lab].any() and enc["hm_ignore"][0].sum() == enc["hm_ignore"][0, lab].sum()
    assert not enc["hm_ignore"][1].any()


def test_images_without_objects_stay_as_negatives(toy):
    data, by_image = _anns(toy)
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 4]
    (toy / "annotations.json").write_text(json.dumps(data))
    pre = Preprocess({"input_size": (3, 96, 128)}, input_hw=(96, 128))
    ds = CocoDataset(toy, preprocess=pre)
    assert len(ds) == 6 and ds.num_without_target == 1
    assert (ds.original_targets([3])["label"] == -1).all()
    item = ds[3]
    assert item["image"].shape == (3, 96, 128) and (item["label"] == -1).all() and item["has_loc"]
    # An image whose only objects are of other classes is a negative for this class list too.
    squares = CocoDataset(toy, classes=["square"])
    lab = squares.original_targets()["label"]
    assert len(squares) == 6 and squares.num_without_target == int((lab < 0).all(axis=1).sum()) > 0
    # Negatives train the heatmap's background and nothing else.
    b = collate([ds[3], ds[0]])
    enc = encode_targets(check_targets(b, 2, 8), 3, (6, 8), 16)
    assert not enc["pos"][0].any() and enc["heatmap"][0].max() == 0 and enc["pos"][1].any()
    # Sets with different instance counts collate, padded with empty slots.
    plain = CocoDataset(write_shapes_dataset(toy.parent / "plain", num_images=2, seed=3, distractors=False),
                        preprocess=pre)
    b = collate([plain[0], ds[0]])
    assert b["label"].shape == (2, 2) and b["label"][0, 1] == -1 and b["keypoints"].shape == (2, 2, 8, 3)


def test_reads_real_visp_labels():
    ds = CocoDataset(REAL_JSON, image_root=REAL_ROOT)
    assert ds.classes == ["cube"] and len(ds) == 100 and ds.num_without_target == 0
    img = ds[0]["image"]
    assert img.shape == (480, 640) and img.dtype == np.uint8  # grayscale PGM
    t = ds.original_targets()
    assert t["label"].shape == (100, 1) and (t["label"] == 0).all()
    assert set(np.unique(t["kp_vis"])) <= {1, 2}
    np.testing.assert_allclose(t["center"][0, 0], [375.535, 273.927], atol=1e-3)
    # Mapped onto a model's class list by name; only the class the file defines is scored.
    mapped = CocoDataset(REAL_JSON, image_root=REAL_ROOT, classes=["cylinder", "cube"])
    assert (mapped.original_targets()["label"] == 1).all() and mapped.scored_classes == [1]


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
    targets = {"label": np.array([[1, -1]]), "center": np.array([[[319.5, 239.5], [0, 0]]]),
               "box": np.array([[[100.0, 50.0, 300.0, 250.0], [0, 0, 0, 0]]]),
               "keypoints": np.array([[[[100.0, 50.0], [299.5, 249.5]], [[0, 0], [0, 0]]]]),
               "kp_vis": np.array([[[2, 1], [0, 0]]]), "ignore": np.array([[False, False]])}
    t = targets_to_input(targets, geom, pre.input_hw)
    np.testing.assert_allclose(t["center"].numpy(), [[[31.5, 23.5], [0, 0]]], atol=1e-5)  # image centre -> input centre
    np.testing.assert_allclose(t["box"].numpy(), [[[10.0, 5.0, 30.0, 25.0], [0, 0, 0, 0]]], atol=1e-5)
    assert t["keypoints"].shape == (1, 2, 2, 3) and t["keypoints"][0, 0, :, 2].tolist() == [2, 1]
    assert t["label"].tolist() == [[1, -1]] and t["has_loc"].all() and not t["ignore"].any()
    pred = {"label": t["label"].numpy(), "center": t["center"].numpy(), "box": t["box"].numpy(),
            "keypoints": t["keypoints"][..., :2].numpy()}
    back = instances_to_original(pred, [meta_of(g, pre.input_hw) for g in geom])
    np.testing.assert_allclose(back["center"], targets["center"], atol=1e-4)
    np.testing.assert_allclose(back["box"], targets["box"], atol=1e-4)
    np.testing.assert_allclose(back["keypoints"], targets["keypoints"], atol=1e-4)


def test_item_carries_model_input_targets(toy):
    pre = Preprocess({"input_size": (3, 96, 128)}, input_hw=(96, 128))  # 64x48 -> 128x96: scale 2
    ds = CocoDataset(toy, preprocess=pre)
    item = ds[0]
    t = ds.original_targets([0])
    assert item["image"].shape == (3, 96, 128) and item["label"].tolist() == t["label"][0].tolist()
    np.testing.assert_allclose(item["box"].numpy(), t["box"][0] * 2, atol=1e-5)
    np.testing.assert_allclose(item["center"].numpy(), (t["center"][0] + 0.5) * 2 - 0.5, atol=1e-5)
    np.testing.assert_allclose(item["keypoints"][..., :2].numpy(), (t["keypoints"][0] + 0.5) * 2 - 0.5, atol=1e-5)
    assert (item["keypoints"][..., 2].numpy() == t["kp_vis"][0]).all()
