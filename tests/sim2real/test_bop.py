"""The BOP layout (``sim2real export-bop``, ``generate format=bop``) read back against the COCO labels.

A tiny real dataset (PyBullet, 64x48, 5 frames, 2 views per scene) is rendered once with
``format=bop``; every BOP file is read back and compared with the COCO labels of the same frame:
intrinsics, poses (mm vs m), visible masks (count, box), the projected 3D-box corners against
the COCO keypoints, depth millimetres.  Then the command, a dataset without scenes, and bad input.
"""

from __future__ import annotations

import copy

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from sim2real import cli
from sim2real.config import load_config
from sim2real.data.bop import export_bop
from sim2real.data.generate import GenerateConfig, generate
from test_generate import TINY_SCENE as GENERATE_SCENE

NUM_FRAMES = 5
VIEWS = 2
W, H = 64, 48

# test_generate's tiny scene, with up to two targets and without its image noise / table texture
TINY_SCENE = {k: v for k, v in copy.deepcopy(GENERATE_SCENE).items() if k not in ("postprocess", "table")}
TINY_SCENE["num_targets"] = [1, 2]


def make_cfg(out: Path, scene_file: Path, *overrides: str) -> GenerateConfig:
    return load_config(GenerateConfig, None, [f"out={out}", f"scene_file={scene_file}", f"num_frames={NUM_FRAMES}",
                                              f"views_per_scene={VIEWS}", "progress=false", "grid.enabled=false",
                                              "workers=1", *overrides])


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("scene") / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY_SCENE))
    return p


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, scene_file) -> Path:
    out = tmp_path_factory.mktemp("bop") / "ds"
    manifest = generate(make_cfg(out, scene_file, "format=bop"))
    assert manifest["bop"]["frames"] == NUM_FRAMES
    return out


def read_json(p: Path):
    return json.loads(p.read_text())


def corners(size) -> np.ndarray:
    signs = np.array([(+1, -1, -1), (-1, -1, -1), (-1, +1, -1), (+1, +1, -1),
                      (+1, -1, +1), (-1, -1, +1), (-1, +1, +1), (+1, +1, +1)], dtype=float)
    return signs * np.asarray(size, dtype=float) / 2


def mask_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() + 1 - xs.min()), int(ys.max() + 1 - ys.min())]


def check_bop_against_coco(ds: Path, bop: Path, split: str = "train_pbr", scenes: bool = True) -> int:
    coco = read_json(ds / "annotations.json")
    anns_of: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        anns_of.setdefault(a["image_id"], []).append(a)
    loaded: dict[int, tuple] = {}
    checked = 0
    for im in coco["images"]:
        scene_id, im_id = (im["scene"], im["view"]) if scenes else (0, im["frame"])
        sdir = bop / split / f"{scene_id:06d}"
        if scene_id not in loaded:
            loaded[scene_id] = tuple(read_json(sdir / f"{n}.json") for n in ("scene_camera", "scene_gt", "scene_gt_info"))
        cams, gts, infos = loaded[scene_id]
        cam, gt, info = cams[str(im_id)], gts[str(im_id)], infos[str(im_id)]
        K = np.asarray(cam["cam_K"], dtype=float).reshape(3, 3)
        assert np.array_equal(K, np.asarray(im["camera_K"], dtype=float))
        # world -> camera is the inverse of T_world_from_cam, t in mm
        T_wc = np.asarray(im["T_world_from_cam"], dtype=float)
        T_cw = np.eye(4)
        T_cw[:3, :3] = np.asarray(cam["cam_R_w2c"]).reshape(3, 3)
        T_cw[:3, 3] = np.asarray(cam["cam_t_w2c"]) / 1000.0
        assert np.allclose(T_cw @ T_wc, np.eye(4), atol=1e-6)
        # images and depth: the same bytes / the same millimetres
        assert (sdir / "rgb" / f"{im_id:06d}.png").read_bytes() == (ds / im["file_name"]).read_bytes()
        depth = cv2.imread(str(sdir / "depth" / f"{im_id:06d}.png"), cv2.IMREAD_UNCHANGED)
        src_depth = cv2.imread(str(ds / im["depth_file"]), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and cam["depth_scale"] == 1.0
        assert np.array_equal(depth * cam["depth_scale"], src_depth.astype(np.float64))
        assert coco["info"]["depth_scale_m"] == 0.001  # COCO depth is mm, so BOP depth * depth_scale = mm
        anns = anns_of.get(im["id"], [])
        assert len(gt) == len(info) == len(anns)  # every annotation, targets and distractors
        for gt_id, (g, inf, a) in enumerate(zip(gt, info, anns)):
            assert g["obj_id"] == a["category_id"]
            T = np.asarray(a["pose_cam_from_obj"], dtype=float)
            R = np.asarray(g["cam_R_m2c"], dtype=float).reshape(3, 3)
            t_mm = np.asarray(g["cam_t_m2c"], dtype=float)
            assert np.abs(R - T[:3, :3]).max() < 1e-6
            assert np.abs(t_mm / 1000.0 - T[:3, 3]).max() < 1e-6
            assert 100 < t_mm[2] < 2000  # millimetres: objects ~0.5 m away
            # visible mask: 0/255, the COCO area, the COCO bbox
            m = cv2.imread(str(sdir / "mask_visib" / f"{im_id:06d}_{gt_id:06d}.png"), cv2.IMREAD_UNCHANGED)
            assert m.dtype == np.uint8 and m.shape == (H, W) and set(np.unique(m)) <= {0, 255}
            assert int((m == 255).sum()) == a["area"] == inf["px_count_visib"]
            assert mask_box(m == 255) == [int(v) for v in a["bbox"]] == inf["bbox_visib"]
            assert inf["visib_fract"] == pytest.approx(a["visibility"], abs=1e-3)
            assert inf["px_count_all"] >= inf["px_count_visib"] and inf["px_count_valid"] <= inf["px_count_all"]
            # projected 3D-box corners (the instance's size, mm) = the COCO keypoints
            pts = corners(np.asarray(a["size_m"]) * 1000.0) @ R.T + t_mm
            uv = pts @ K.T
            uv = uv[:, :2] / uv[:, 2:3]
            kps = np.asarray(a["keypoints"], dtype=float).reshape(8, 3)
            front = pts[:, 2] > 0
            assert front.all()
            assert np.abs(uv - kps[:, :2]).max() < 1e-3
            # bbox_obj: of the projected corners, not clipped; it holds the visible box
            x, y, w, h = inf["bbox_obj"]
            iu, iv = np.rint(uv[:, 0]), np.rint(uv[:, 1])
            assert [x, y, x + w - 1, y + h - 1] == [iu.min(), iv.min(), iu.max(), iv.max()]
            bx, by, bw, bh = inf["bbox_visib"]
            assert x <= bx and y <= by and bx + bw <= x + w and by + bh <= y + h
            checked += 1
    return checked


def test_bop_files_equal_the_coco_labels(dataset):
    coco = read_json(dataset / "annotations.json")
    bop = dataset / "bop"
    n = check_bop_against_coco(dataset, bop)
    assert n == len(coco["annotations"]) > NUM_FRAMES
    assert {a["is_target"] for a in coco["annotations"]} == {True, False}  # distractors included
    scenes = sorted(p.name for p in (bop / "train_pbr").iterdir())
    assert scenes == [f"{s:06d}" for s in range(3)]  # 5 frames, 2 views per scene
    cam = read_json(bop / "camera.json")
    K0 = np.asarray(coco["images"][0]["camera_K"])
    assert (cam["fx"], cam["fy"], cam["cx"], cam["cy"]) == (K0[0, 0], K0[1, 1], K0[0, 2], K0[1, 2])
    assert (cam["width"], cam["height"]) == (W, H)
    # models_info: one obj_id per class present = category_id, median 3D-box size in mm
    models = read_json(bop / "models_info.json")
    by_cat: dict[int, list] = {}
    for a in coco["annotations"]:
        by_cat.setdefault(a["category_id"], []).append(a["size_m"])
    assert sorted(models, key=int) == [str(c) for c in sorted(by_cat)]
    for c, sizes in by_cat.items():
        s = np.median(np.asarray(sizes), axis=0) * 1000.0
        m = models[str(c)]
        assert [m["size_x"], m["size_y"], m["size_z"]] == pytest.approx(list(s), abs=1e-6)
        assert [m["min_x"], m["min_y"], m["min_z"]] == pytest.approx(list(-s / 2), abs=1e-6)
        assert m["diameter"] == pytest.approx(float(np.linalg.norm(s)), abs=1e-6)
    manifest = read_json(dataset / "manifest.json")
    assert manifest["bop"]["instances"] == n and manifest["bop"]["skipped_total"] == 0
    assert not list(bop.glob(".*"))  # no temporary folder left


def test_format_bop_leaves_the_coco_output_unchanged(dataset, scene_file, tmp_path):
    plain = tmp_path / "plain"
    generate(make_cfg(plain, scene_file))  # format: coco, the default
    assert not (plain / "bop").exists()
    assert (plain / "annotations.json").read_bytes() == (dataset / "annotations.json").read_bytes()
    for d in ("images", "depth", "masks"):
        for p in sorted((plain / d).iterdir()):
            assert p.read_bytes() == (dataset / d / p.name).read_bytes()
    # a finished coco dataset resumes with format=bop (format is not part of the dataset hash)
    m = generate(make_cfg(plain, scene_file, "format=bop"))
    assert m["run"]["rendered_now"] == 0 and m["bop"]["frames"] == NUM_FRAMES
    check_bop_against_coco(plain, plain / "bop")


def test_command_and_a_dataset_without_scenes(dataset, tmp_path, capsys):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds, ignore=shutil.ignore_patterns("bop"))
    coco = read_json(ds / "annotations.json")
    for im in coco["images"]:
        im.pop("scene"), im.pop("view")
    (ds / "annotations.json").write_text(json.dumps(coco))
    out = tmp_path / "bop"
    assert cli.main(["export-bop", str(ds), "--out", str(out), "--split", "train"]) == 0
    line = capsys.readouterr().out.strip()
    assert f"{NUM_FRAMES} frames" in line and f"{len(coco['annotations'])} instances" in line
    assert "1 scenes" in line and "skipped 0" in line and "\n" not in line
    assert [p.name for p in (out / "train").iterdir()] == ["000000"]  # one scene, im_id = frame
    assert check_bop_against_coco(ds, out, "train", scenes=False) == len(coco["annotations"])
    # an existing split is not replaced without --overwrite
    assert cli.main(["export-bop", str(ds), "--out", str(out), "--split", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--overwrite" in err and "\n" not in err
    assert cli.main(["export-bop", str(ds), "--out", str(out), "--split", "train", "--overwrite"]) == 0


def _copy(dataset: Path, tmp_path: Path) -> tuple[Path, dict]:
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds, ignore=shutil.ignore_patterns("bop"))
    return ds, read_json(ds / "annotations.json")


def test_missing_files_are_one_line_errors(dataset, tmp_path, capsys):
    ds, coco = _copy(dataset, tmp_path)
    out = tmp_path / "bop"
    # no annotations.json
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        export_bop(tmp_path / "nowhere", out)
    assert cli.main(["export-bop", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sim2real export-bop: error:") and "annotations.json" in err and "\n" not in err
    assert not out.exists()
    # a missing depth file / mask file: named with its key
    (ds / coco["images"][2]["depth_file"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"images\[2\] \(id 3\) 'depth_file'.*depth/000002.png"):
        export_bop(ds, out)
    assert not (out / "train_pbr").exists() and not list(out.glob(".*"))  # nothing half written
    shutil.copy(dataset / coco["images"][2]["depth_file"], ds / coco["images"][2]["depth_file"])
    (ds / coco["images"][1]["mask_file"]).unlink()
    assert cli.main(["export-bop", str(ds), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'mask_file'" in err and "masks/000001.png" in err and "\n" not in err


def test_annotation_without_pose_or_size(dataset, tmp_path, capsys):
    ds, coco = _copy(dataset, tmp_path)
    out = tmp_path / "bop"
    del coco["annotations"][3]["pose_cam_from_obj"]
    coco["annotations"][5]["size_m"] = None
    (ds / "annotations.json").write_text(json.dumps(coco))
    aid, iid = coco["annotations"][3]["id"], coco["annotations"][3]["image_id"]
    with pytest.raises(ValueError, match=rf"annotation id {aid} \(image id {iid}\) 'pose_cam_from_obj': missing"):
        export_bop(ds, out)
    assert not (out / "train_pbr").exists()
    assert cli.main(["export-bop", str(ds), "--out", str(out)]) == 2
    assert "--skip-invalid" in capsys.readouterr().err
    # skipped and counted instead
    s = export_bop(ds, out, skip_invalid=True)
    assert s["skipped"] == {"no_pose": 1, "no_size_m": 1} and s["skipped_total"] == 2
    assert s["instances"] == len(coco["annotations"]) - 2
    total = sum(len(v) for p in (out / "train_pbr").iterdir() for v in read_json(p / "scene_gt.json").values())
    assert total == s["instances"]
    assert cli.main(["export-bop", str(ds), "--out", str(out), "--overwrite", "--skip-invalid"]) == 0
    assert "skipped 2 (no_pose 1, no_size_m 1)" in capsys.readouterr().out
