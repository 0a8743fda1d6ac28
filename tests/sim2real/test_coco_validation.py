"""One COCO validator for every reader (issue 14): boxes, sizes, category ids, image paths kept inside
the image root, evaluation-only frames refused on the resolved path, exported real splits readable.

Evaluation-only ViSP frames (100-217) are never read here: entries point at them and the tests check
the readers REFUSE before reading (the refusal comes before any existence/size check).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from sim2real.data import protected_frames
from sim2real.data.dataset import CocoDataset
from sim2real.data.protected_frames import frame_index, protected_range
from sim2real.data.real import (ProtectedImageError, RealDataError, coco_from_dict, export_coco, load_coco)
from sim2real.train.toy_data import write_shapes_dataset

VISP_CUBE = Path("/usr/share/visp-images-data/ViSP-images/mbt/cube")


@pytest.fixture
def toy(tmp_path):
    return write_shapes_dataset(tmp_path / "toy", num_images=4, size=(64, 48), seed=1)


def _edit(toy: Path, fn) -> Path:
    path = toy / "annotations.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


def _target(data: dict) -> dict:
    return next(a for a in data["annotations"] if a["image_id"] == 1 and a["is_target"])


# ------------------------------------------------------------------ item 1: one validator


def test_generated_toy_set_passes_both_readers(toy):
    assert len(CocoDataset(toy)) == 4
    assert len(load_coco(toy / "annotations.json")) == 4


@pytest.mark.parametrize("reader", ["dataset", "load_coco"])
def test_box_outside_image_refused_by_every_reader(toy, reader):
    _edit(toy, lambda d: _target(d).update(bbox=[50, 8, 20, 16]))  # 64 px wide image: 6 px over
    read = CocoDataset if reader == "dataset" else (lambda p: load_coco(p / "annotations.json"))
    with pytest.raises(RealDataError, match=r"annotations\.json: annotations\[\d+\] \(id \d+\) 'bbox' of image "
                                            r"'images/000000\.png' \(64x48\).*outside by 6\.0 px"):
        read(toy)


def test_negative_box_size_refused(toy):
    _edit(toy, lambda d: _target(d).update(bbox=[30, 20, -5, 10]))
    with pytest.raises(RealDataError, match=r"annotations\.json: annotations\[\d+\].*'bbox'.*w > 0 and h > 0"):
        CocoDataset(toy)


def test_unknown_category_id_named(toy):
    _edit(toy, lambda d: _target(d).update(category_id=42))
    with pytest.raises(RealDataError, match=r"annotations\.json: annotations\[\d+\] \(id \d+\) 'category_id': "
                                            r"expected one of the category ids \[1, 2, 3\], got 42"):
        CocoDataset(toy)


def test_declared_size_differs_from_file(toy):
    _edit(toy, lambda d: d["images"][2].update(width=640, height=480))
    with pytest.raises(RealDataError, match=r"annotations\.json: .*image id 3 '000002\.png' declares 640x480, "
                                            r"the file is 64x48"):
        CocoDataset(toy)
    with pytest.raises(RealDataError, match=r"images\[2\] \(id 3\) '000002\.png' declares 640x480"):
        load_coco(toy / "annotations.json")


# ------------------------------------------------------------------ item 2: paths inside the root


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_file_name_outside_root_refused_unless_opted_out(tmp_path, toy, how):
    outside = tmp_path / "elsewhere.png"
    cv2.imwrite(str(outside), np.zeros((48, 64, 3), np.uint8))
    name = "../elsewhere.png" if how == "dotdot" else str(outside)
    _edit(toy, lambda d: d["images"][0].update(file_name=name))
    for read in (CocoDataset, lambda p: load_coco(p / "annotations.json")):
        with pytest.raises(RealDataError, match=r"images\[0\] \(id 1\) 'file_name': expected a path inside the "
                                                r"image root .*allow_outside_root"):
            read(toy)
    ds = CocoDataset(toy, allow_outside_root=True)
    assert os.path.abspath(ds.image_path(0)) == str(outside) and ds.load(0).shape == (48, 64, 3)
    assert load_coco(toy / "annotations.json", allow_outside_root=True)[0].path.resolve() == outside


def test_predict_reader_uses_the_validator(tmp_path, toy):
    from sim2real.commands.predict import _coco_images

    assert len(_coco_images(toy, None)) == 4
    _edit(toy, lambda d: d["images"][0].update(file_name="../../etc/passwd"))
    with pytest.raises(RealDataError, match="inside the image root"):
        _coco_images(toy, None)


# ------------------------------------------------------------------ item 2: evaluation-only frames


def test_frame_index_is_last_number_of_stem():
    assert frame_index("/x/image0150.pgm") == 150 and frame_index("cam2_f0007.png") == 7
    assert frame_index("a.png") is None


@pytest.mark.skipif(not VISP_CUBE.is_dir(), reason="visp-images-data not installed")
@pytest.mark.parametrize("how", ["symlink", "dotdot", "absolute"])
def test_real_visp_eval_frame_refused_before_reading(tmp_path, toy, how, monkeypatch):
    """A COCO entry naming ViSP cube frame 150 (evaluation-only) by any route is refused."""
    import sim2real.data.dataset as dataset_mod
    import sim2real.data.real as real_mod

    def no_read(path, *a, **k):  # even with the guard broken, this test must not read the frame
        raise AssertionError(f"a reader tried to read {path} instead of refusing it")

    for mod, attr in ((real_mod, "image_header_size"), (real_mod, "load_image"), (dataset_mod, "load_image")):
        monkeypatch.setattr(mod, attr, no_read)
    frame = VISP_CUBE / "image0150.pgm"  # never opened: only its name is used
    if how == "symlink":
        (toy / "images" / "innocent.pgm").symlink_to(frame)
        name, kw = "images/innocent.pgm", {}
    elif how == "dotdot":
        name, kw = os.path.relpath(frame, toy), {"allow_outside_root": True}
    else:
        name, kw = str(frame), {"allow_outside_root": True}
    _edit(toy, lambda d: d["images"][0].update(file_name=name, width=640, height=480))
    with pytest.raises(ProtectedImageError, match=r"images\[0\] \(id 1\).*evaluation-only frame .*mbt/cube "
                                                  r"frames 100-217.*--allow-eval-frames"):
        CocoDataset(toy, **kw)
    with pytest.raises(ProtectedImageError, match="evaluation-only"):
        load_coco(toy / "annotations.json", **kw)
    assert protected_range(toy / name if how != "absolute" else name) == range(100, 218)
    assert protected_range(VISP_CUBE / "image0099.pgm") is None  # dev frames stay usable


@pytest.fixture
def fake_protected(tmp_path, monkeypatch):
    """A stand-in sequence folder whose frames 3-5 are evaluation-only (so opt-in reads are testable)."""
    monkeypatch.setenv("SIM2REAL_VISP_ROOT", str(tmp_path / "visp"))
    monkeypatch.setattr(protected_frames, "PROTECTED_FRAMES", {})
    monkeypatch.setattr(protected_frames, "VISP_CUBE_EVAL_FRAMES", range(3, 6))
    folder = tmp_path / "visp" / "mbt" / "cube"
    folder.mkdir(parents=True)
    for i in range(8):
        cv2.imwrite(str(folder / f"image{i:04d}.pgm"), np.full((48, 64), 10 * i, np.uint8))
    return folder


def _frames_coco(folder: Path, frames, out: Path, root: Path) -> Path:
    images = [{"id": i + 1, "file_name": os.path.relpath(folder / f"image{f:04d}.pgm", root), "width": 64,
               "height": 48, "frame": f} for i, f in enumerate(frames)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}
            for i in range(len(frames))]
    out.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": 1, "name": "cube"}]}))
    return out


def test_protected_frames_need_the_final_evaluation_opt_in(tmp_path, fake_protected):
    root = fake_protected.parent.parent
    labels = _frames_coco(fake_protected, [0, 1, 4], tmp_path / "labels.json", root)
    with pytest.raises(ProtectedImageError, match=r"images\[2\] \(id 3\) names .*image0004\.pgm"):
        CocoDataset(labels, image_root=root)
    with pytest.raises(ProtectedImageError, match="allow_protected=True"):
        load_coco(labels, root)
    ds = CocoDataset(labels, image_root=root, allow_protected=True)  # the final evaluation
    assert len(ds) == 3 and ds.load(2)[0, 0] == 40
    dev = _frames_coco(fake_protected, [0, 1, 2, 6], tmp_path / "dev.json", root)
    assert len(CocoDataset(dev, image_root=root)) == 4


def test_exported_split_cannot_smuggle_a_protected_frame(tmp_path, fake_protected):
    """An exported real split (adapt's run folder) edited to name a protected frame is refused."""
    root = fake_protected.parent.parent
    coco = load_coco(_frames_coco(fake_protected, [0, 1, 2], tmp_path / "labels.json", root), root)
    ann = export_coco(coco, tmp_path / "run" / "real" / "train", copy_images=False)
    data = json.loads(ann.read_text())
    data["images"][0]["file_name"] = "mbt/cube/image0005.pgm"
    ann.write_text(json.dumps(data))
    with pytest.raises(ProtectedImageError, match="image0005"):
        CocoDataset(ann)


# ------------------------------------------------------------------ exported splits stay readable


def test_export_without_copy_writes_root_relative_names(tmp_path, fake_protected, monkeypatch):
    root = fake_protected.parent.parent
    coco = load_coco(_frames_coco(fake_protected, [0, 1, 2], tmp_path / "labels.json", root), root)
    ann = export_coco(coco, tmp_path / "run" / "real" / "test", copy_images=False, name="test")
    data = json.loads(ann.read_text())
    assert data["info"]["image_root"] == str(root)
    assert [im["file_name"] for im in data["images"]] == [f"mbt/cube/image{i:04d}.pgm" for i in range(3)]
    monkeypatch.chdir(tmp_path)  # readers take the root from info, not the working folder
    ds = CocoDataset(Path("run/real/test"))
    assert ds.image_root == root and len(ds) == 3 and ds.load(1)[0, 0] == 10
    again = load_coco(Path("run/real/test/annotations.json"))
    assert again.image_root == root and again[2].path == root / "mbt/cube/image0002.pgm"
    # An explicit image root still wins over info.image_root.
    with pytest.raises(FileNotFoundError, match="image0000.pgm"):
        CocoDataset(Path("run/real/test"), image_root=tmp_path)


def test_info_image_root_must_be_a_string(tmp_path, toy):
    _edit(toy, lambda d: d.update(info={"image_root": 3}))
    with pytest.raises(RealDataError, match=r"annotations\.json: info 'image_root': expected a folder path"):
        load_coco(toy / "annotations.json")


def test_coco_from_dict_is_the_shared_validator(tmp_path):
    with pytest.raises(RealDataError, match=r"<dict>: images\[0\] \(id 1\) 'file_name': expected a path inside"):
        coco_from_dict({"images": [{"id": 1, "file_name": "/etc/hosts", "width": 1, "height": 1}],
                        "annotations": [], "categories": [{"id": 1, "name": "a"}]}, tmp_path, check_files=False)
