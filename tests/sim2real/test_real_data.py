"""Real data readers: COCO labels, class folders, footage, ViSP rules, export and stored splits."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from sim2real.data.images import load_image
from sim2real.data.real import (ClassMappingError, RealDataError, export_coco, load_coco, load_image_folder,
                                map_classes)
from sim2real.data.real_footage import (FootageError, FrameFolderFootage, ProtectedFramesError, VideoFootage,
                                        open_footage)
from sim2real.data.real_visp import (load_visp_cube_dev, visp_cube_default_splits, visp_cube_dev_frames,
                                     visp_cube_dir, visp_cube_footage)
from sim2real.data.splits import SplitSourceChangedError, SplitsError, load_splits, make_splits

H, W = 48, 64
K = [[50.0, 0, 32.0], [0, 50.0, 24.0], [0, 0, 1]]


def _write_set(root: Path, n=12, gray=True, **ann_over):
    """n frames with one 'cube' (+ a 'mug' on frame 0); returns the labels path."""
    (root / "imgs").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        value = (40 + 10 * i) % 256
        img = np.full((H, W) if gray else (H, W, 3), value, np.uint8)
        cv2.imwrite(str(root / "imgs" / f"f{i:03d}.png"), img)
        images.append({"id": i + 1, "file_name": f"imgs/f{i:03d}.png", "width": W, "height": H, "frame": i,
                       "camera_K": K})
        a = {"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 8, 20, 16], "area": 320,
             "iscrowd": 0, "keypoints": [12, 10, 2, 28, 22, 1], "num_keypoints": 2, "center_px": [20, 16],
             "center_depth_m": 0.5, "pose_cam_from_obj": np.eye(4).tolist()}
        a.update(ann_over)
        anns.append(a)
    anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "area": 25,
                 "iscrowd": 0})
    cats = [{"id": 1, "name": "cube", "supercategory": "object", "keypoints": ["c0", "c1"], "skeleton": [[1, 2]]},
            {"id": 2, "name": "mug", "supercategory": "object"}]
    path = root / "labels.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


# ------------------------------------------------------------------ COCO


def test_coco_reader_fields(tmp_path):
    coco = load_coco(_write_set(tmp_path))
    assert len(coco) == 12 and coco.classes == ["cube", "mug"] and coco.is_temporal
    im = coco[0]
    assert im.frame == 0 and im.camera_K.shape == (3, 3) and im.path == tmp_path / "imgs/f000.png"
    a = im.annotations[0]
    assert a.class_name == "cube" and a.keypoints.shape == (2, 3) and a.center_px == [20.0, 16.0]
    assert a.center_depth_m == 0.5 and a.pose_cam_from_obj.shape == (4, 4) and a.box_xyxy == [10, 8, 30, 24]
    assert coco.target(im).class_name == "cube"            # largest
    assert coco.target(im, ["mug"]).class_name == "mug"     # restricted to the model's classes
    assert coco.load(im).shape == (H, W)
    assert len(coco.sha256) == 64


def test_coco_missing_image_names_file(tmp_path):
    path = _write_set(tmp_path)
    (tmp_path / "imgs" / "f003.png").unlink()
    with pytest.raises(RealDataError, match=r"f003\.png") as e:
        load_coco(path)
    assert "labels.json" in str(e.value) and "id 4" in str(e.value)


def test_coco_box_outside_image(tmp_path):
    with pytest.raises(RealDataError, match=r"annotations\[0\].*bbox.*f000\.png.*outside by 6\.0 px"):
        load_coco(_write_set(tmp_path / "a", bbox=[50, 8, 20, 16]))
    coco = load_coco(_write_set(tmp_path / "b", bbox=[45.5, 8, 20, 16]))  # 1.5 px over: tolerated
    assert coco[0].annotations[0].bbox[0] == 45.5
    with pytest.raises(RealDataError, match="w > 0"):
        load_coco(_write_set(tmp_path / "c", bbox=[1, 1, 0, 5]))


def test_coco_malformed_fields(tmp_path):
    with pytest.raises(RealDataError, match="keypoints.*6 numbers"):
        load_coco(_write_set(tmp_path / "a", keypoints=[1, 2, 2]))
    with pytest.raises(RealDataError, match="pose_cam_from_obj.*4x4"):
        load_coco(_write_set(tmp_path / "b", pose_cam_from_obj=[[1, 0], [0, 1]]))
    with pytest.raises(RealDataError, match="category_id"):
        load_coco(_write_set(tmp_path / "c", category_id=7))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RealDataError, match="bad.json.*not valid JSON"):
        load_coco(bad)
    with pytest.raises(RealDataError, match="nope.json.*does not exist"):
        load_coco(tmp_path / "nope.json")


# ------------------------------------------------------------------ classes and folders


def test_class_mapping_by_name_and_error_lists_both_sides():
    assert map_classes(["Red Cube", "mug"], ["mug", "red_cube", "bowl"]) == {"Red Cube": 1, "mug": 0}
    assert map_classes(["tasse"], ["mug"], {"tasse": "mug"}) == {"tasse": 0}
    with pytest.raises(ClassMappingError) as e:
        map_classes(["cube", "cyl"], ["cube", "cylinder", "sphere"])
    msg = str(e.value)
    assert "['cube', 'cyl']" in msg and "['cube', 'cylinder', 'sphere']" in msg and "'cyl'" in msg
    assert "cylinder" in msg and e.value.unmatched == ["cyl"]


def test_image_folder_by_class(tmp_path):
    for cls, n in (("cube", 2), ("mug", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "mug" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path, sim_classes=["mug", "cube"])
    assert ds.classes == ["cube", "mug"] and len(ds) == 5 and ds.load(4)[1] == "mug"
    with pytest.raises(ClassMappingError, match="sphere"):
        load_image_folder(tmp_path, sim_classes=["sphere"])
    (tmp_path / "bowl").mkdir()
    with pytest.raises(RealDataError, match="without image files.*bowl"):
        load_image_folder(tmp_path)
    with pytest.raises(RealDataError, match="does not exist"):
        load_image_folder(tmp_path / "absent")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(RealDataError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty_root")


# ------------------------------------------------------------------ footage


def test_frame_folder_corrupt_frames_skipped_and_counted(tmp_path, caplog):
    for i in range(10):
        cv2.imwrite(str(tmp_path / f"frame_{i}.png"), np.full((H, W), i * 20, np.uint8))
    (tmp_path / "frame_4.png").write_bytes(b"not a png")
    (tmp_path / "frame_6.png").write_bytes(b"")
    f = FrameFolderFootage(tmp_path, stride=2)
    with caplog.at_level("WARNING"):
        got = f.read_all()
    assert [i for i, _ in got] == [0, 2, 8]
    assert f.skipped == 2 and f.report.to_dict()["skipped_frames"] == [4, 6]
    assert "skipped 2 unreadable" in caplog.text and "frame_4.png" in caplog.text
    assert got[1][1].shape == (H, W) and got[1][1][0, 0] == 40
    # natural order: frame_10 after frame_9, frame range (start, stop)
    cv2.imwrite(str(tmp_path / "frame_10.png"), np.zeros((H, W), np.uint8))
    assert [i for i, _ in FrameFolderFootage(tmp_path, frames=(8, 11))] == [8, 9, 10]


def test_frame_folder_errors(tmp_path):
    with pytest.raises(FootageError, match="no image files"):
        FrameFolderFootage(tmp_path)
    with pytest.raises(RealDataError, match="does not exist"):
        open_footage(tmp_path / "absent")
    (tmp_path / "only_bad.png").write_bytes(b"x")
    with pytest.raises(FootageError, match="no readable frame"):
        FrameFolderFootage(tmp_path).read_all()


def _write_video(path: Path, n=10):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert vw.isOpened()
    for i in range(n):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[..., 2] = 200          # red in BGR
        frame[:, :, 1] = i * 20       # frame number in green
        vw.write(frame)
    vw.release()


def test_video_stride_and_range(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path)
    v = VideoFootage(path, stride=3)
    got = v.read_all()
    assert [i for i, _ in got] == [0, 3, 6, 9] and v.frame_count == 10 and v.skipped == 0
    img = got[1][1]
    assert img.shape == (H, W, 3) and img[..., 0].mean() > 150 and img[..., 2].mean() < 40  # RGB order
    assert abs(img[..., 1].mean() - 60) < 8
    assert [i for i, _ in open_footage(path, stride=2, frames=range(2, 8))] == [2, 4, 6]
    assert [i for i, _ in VideoFootage(path, max_frames=2)] == [0, 1]


def test_video_corrupt_frame_skipped_and_counted(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path)
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG SOI per frame
    assert len(starts) == 10
    data[starts[4]:starts[4] + 200] = bytes(200)  # wipe frame 4's header
    path.write_bytes(bytes(data))
    v = VideoFootage(path)
    assert [i for i, _ in v] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert v.report.to_dict()["skipped_frames"] == [4] and v.report.ended_early is None
    # the bad frame keeps its place in the stride grid, and counts only when the stride wanted it
    odd = VideoFootage(path, stride=2, frames=range(3, 10))
    assert [i for i, _ in odd] == [3, 5, 7, 9] and odd.skipped == 0
    assert [i for i, _ in VideoFootage(path, frames=[1, 5])] == [1, 5]


def test_video_that_does_not_open(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(FootageError, match="broken.avi"):
        open_footage(bad)
    with pytest.raises(FootageError, match="missing.mp4.*does not exist"):
        VideoFootage(tmp_path / "missing.mp4")


# ------------------------------------------------------------------ ViSP rules


def test_visp_dev_labels_and_footage_respect_eval_frames():
    coco = load_visp_cube_dev()
    assert len(coco) == 100 and sorted(im.frame for im in coco) == list(range(100))
    assert coco.classes == ["cube"] and coco[0].path.is_file()
    assert visp_cube_dev_frames() == range(0, 100)
    f = visp_cube_footage(stride=25)
    got = f.read_all()
    assert [i for i, _ in got] == [0, 25, 50, 75] and got[0][1].shape == (480, 640)
    with pytest.raises(ProtectedFramesError, match="100-217"):
        visp_cube_footage(frames=range(90, 110))
    with pytest.raises(ProtectedFramesError, match="100-217"):
        open_footage(visp_cube_dir())  # all frames: refused
    with pytest.raises(ProtectedFramesError):
        FrameFolderFootage(visp_cube_dir(), frames=[5, 150])
    # evaluation code may ask explicitly (not read here)
    assert len(visp_cube_footage(frames=range(100, 218), allow_eval=True)) == 118


# ------------------------------------------------------------------ export


def test_export_in_training_format(tmp_path):
    coco = load_coco(_write_set(tmp_path / "src"))
    sub = coco.subset([3, 1])
    out = tmp_path / "export"
    path = export_coco(sub, out, classes=["sphere", "cube", "mug"], name="k2")
    first = path.read_bytes()
    d = json.loads(first)
    assert [c["name"] for c in d["categories"]] == ["sphere", "cube", "mug"]
    assert [c["id"] for c in d["categories"]] == [1, 2, 3] and d["categories"][1]["keypoints"] == ["c0", "c1"]
    assert [im["file_name"] for im in d["images"]] == ["images/000000.png", "images/000001.png"]
    assert d["images"][0]["source_file"] == "imgs/f002.png" and d["images"][0]["camera_K"] == K
    cube_anns = [a for a in d["annotations"] if a["category_id"] == 2]
    assert len(cube_anns) == 2 and cube_anns[0]["center_px"] == [20, 16]
    assert {a["category_id"] for a in d["annotations"]} == {2, 3}
    assert load_image(out / "images/000000.png").ndim == 2  # gray stays 1-channel
    COCO(str(path))  # pycocotools reads it
    again = load_coco(path, out)
    assert len(again) == 2 and again[0].annotations[0].class_name == "cube"
    assert json.loads((out / "manifest.json").read_text())["classes"] == ["sphere", "cube", "mug"]
    export_coco(sub, out, classes=["sphere", "cube", "mug"], name="k2")
    assert path.read_bytes() == first  # deterministic
    from sim2real.data.dataset import CocoDataset  # the training reader consumes the export unchanged

    train_ds = CocoDataset(out, classes=["sphere", "cube", "mug"])
    assert len(train_ds) == 2 and train_ds.num_keypoints == 2
    t = train_ds.original_targets()  # every instance: the cube on both frames, the mug on frame 0 (2nd image)
    assert t["label"].tolist() == [[1, -1], [1, 2]]
    np.testing.assert_allclose(t["center"][:, 0], [[20, 16], [20, 16]])
    np.testing.assert_allclose(t["box"][1, 1], [0, 0, 5, 5])
    with pytest.raises(ClassMappingError, match="mug"):
        export_coco(sub, tmp_path / "x", classes=["cube"])


# ------------------------------------------------------------------ splits


def test_splits_deterministic_disjoint_nested(tmp_path):
    coco = load_coco(_write_set(tmp_path / "src", n=40))
    s = make_splits(coco, k=4, n_val=8, seed=3, n_test=10, gap=1)
    parts = [set(s[n]) for n in ("pool", "val", "test", "excluded")]
    assert sum(len(p) for p in parts) == 40 and len(set().union(*parts)) == 40  # a partition
    assert set(s["train"]) <= set(s["pool"]) and len(s["train"]) == 4 and s["unlabelled"] == s["pool"]
    frames = {k: s.frame_indices(k) for k in ("pool", "val", "test", "excluded")}
    assert max(frames["pool"]) < min(frames["val"]) and max(frames["val"]) < min(frames["test"])
    assert frames["excluded"] == [max(frames["pool"]) + 1, max(frames["val"]) + 1]  # guard frames
    assert len(frames["val"]) == 8 and len(frames["test"]) == 10
    s.save(tmp_path / "a.json")
    make_splits(coco, k=4, n_val=8, seed=3, n_test=10, gap=1).save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert set(make_splits(coco, k=2, n_val=8, seed=3, n_test=10, gap=1)["train"]) < set(s["train"])  # nested
    assert make_splits(coco, k=4, n_val=8, seed=4, n_test=10, gap=1)["train"] != s["train"]
    loaded = load_splits(tmp_path / "a.json", coco)
    assert loaded.ids == s.ids and loaded.k == 4 and loaded.seed == 3
    assert [im.id for im in loaded.subset(coco, "val")] == s["val"]
    with pytest.raises(SplitsError, match="cannot hold"):
        make_splits(coco, k=30, n_val=8, seed=0, n_test=10)


def test_random_splits_for_non_temporal_sets(tmp_path):
    path = _write_set(tmp_path / "src", n=20)
    d = json.loads(path.read_text())
    for im in d["images"]:
        del im["frame"]
    path.write_text(json.dumps(d))
    coco = load_coco(path)
    s = make_splits(coco, k=3, n_val=5, seed=0, n_test=5)
    assert s.strategy == "random" and not s["excluded"]
    assert len(set(s["val"]) | set(s["test"]) | set(s["pool"])) == 20 and len(s["pool"]) == 10
    with pytest.raises(SplitsError, match="no frame numbers"):
        s.frame_indices("val")


def test_split_file_mismatch(tmp_path):
    path = _write_set(tmp_path / "src", n=20)
    coco = load_coco(path)
    make_splits(coco, k=2, n_val=4, seed=0, n_test=4).save(tmp_path / "s.json")
    assert load_splits(tmp_path / "s.json").k == 2  # re-hashes the recorded labels file
    d = json.loads(path.read_text())
    d["annotations"][0]["bbox"] = [11, 8, 20, 16]  # a label fixed later
    path.write_text(json.dumps(d))
    with pytest.raises(SplitSourceChangedError, match="labels.json.*changed"):
        load_splits(tmp_path / "s.json")
    with pytest.raises(SplitSourceChangedError, match="re-make the splits"):
        load_splits(tmp_path / "s.json", load_coco(path))
    (tmp_path / "junk.json").write_text('{"format": "other"}')
    with pytest.raises(SplitsError, match="junk.json"):
        load_splits(tmp_path / "junk.json")


def test_visp_default_splits(tmp_path):
    s = visp_cube_default_splits(k=10, seed=0)
    f = {k: s.frame_indices(k) for k in ("train", "pool", "val", "test", "excluded")}
    assert f["pool"] == list(range(0, 46)) and f["val"] == list(range(48, 68)) and f["test"] == list(range(70, 100))
    assert f["excluded"] == [46, 47, 68, 69] and len(set(f["train"])) == 10 and set(f["train"]) <= set(f["pool"])
    assert max(max(v) for v in f.values()) < 100  # evaluation frames never appear
    frames = [i for i, _ in visp_cube_footage(frames=s.frame_indices("unlabelled"), stride=15)]
    assert frames == [0, 15, 30, 45]
