"""sim2real generate / merge: COCO output, same bytes for any worker count, resume, shards, bad input.

Real PyBullet renders of a tiny scene (64x48, a few primitives, short settling) keep each test
to seconds. One reference dataset (workers=1) is rendered once per module and compared against.
It has 2 views per scene, so 5 frames = scenes {0, 1}, {2, 3}, {4} (a short last group).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sim2real import cli
from sim2real.config import ConfigError, load_config
from sim2real.data import coco_writer
from sim2real.data.generate import (GenerateConfig, ResumeError, _chunks, _steady_rate, frame_seed, generate,
                                    scene_seed, shard_frames)
from sim2real.data.merge import merge_shards
from sim2real.io import OutputError

ROOT = Path(__file__).resolve().parents[2]
NUM_FRAMES = 5
VIEWS = 2
W, H = 64, 48

TINY_SCENE = {
    "objects": [
        {"class": "cube", "shape": "box", "size": [0.05, 0.05, 0.05], "scale": [0.8, 1.4]},
        {"class": "ball", "shape": "sphere", "radius": 0.03},
        {"class": "can", "role": "distractor", "shape": "cylinder", "radius": 0.025, "height": 0.08},
    ],
    "num_targets": [1, 1],
    "num_distractors": [1, 2],
    "camera": {"width": W, "height": H, "fov_deg": 50.0, "distance_m": [0.45, 0.6]},
    "background": {"enabled": False},
    "texture_pool_size": 2,
    "texture_size_px": 16,
    "table": {"appearance": {"texture_prob": 0.5, "patterns": ["checker"]}},
    "object_appearance": {"texture_prob": 0.0},
    # Image noise on: its randomness must come from the frame seed too.
    "postprocess": {"enabled": True, "noise_prob": 1.0, "jpeg_prob": 0.0},
    "physics": {"settle_steps": 10},
}


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("scene") / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY_SCENE))
    return p


def make_cfg(out, scene_file, *overrides: str) -> GenerateConfig:
    return load_config(GenerateConfig, None, [f"out={out}", f"scene_file={scene_file}", f"num_frames={NUM_FRAMES}",
                                              f"views_per_scene={VIEWS}", "progress=false", "grid.num=4",
                                              "grid.cell_width=64", *overrides])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, scene_file) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ds"
    generate(make_cfg(out, scene_file, "workers=1"))
    return out


def frame_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for d in coco_writer.FRAME_DIRS for p in sorted((root / d).glob("*"))}


def assert_same_dataset(a: Path, b: Path) -> None:
    fa, fb = frame_files(a), frame_files(b)
    assert sorted(fa) == sorted(fb)
    differing = [k for k in fa if fa[k] != fb[k]]
    assert not differing, f"files differ: {differing}"
    assert (a / "annotations.json").read_bytes() == (b / "annotations.json").read_bytes()


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob(".*") if p.name != coco_writer.LOCK_NAME]


# ------------------------------------------------------------------------------------------------


def test_coco_output_loads_and_matches_files(reference):
    root = reference
    coco = COCO(str(root / "annotations.json"))
    raw = json.loads((root / "annotations.json").read_text())
    assert [c["name"] for c in raw["categories"]] == ["cube", "ball", "can"]  # targets, then distractors
    assert [c["id"] for c in raw["categories"]] == [1, 2, 3]
    assert raw["categories"][0]["keypoints"] == [f"corner{i}" for i in range(8)]
    assert len(raw["categories"][0]["skeleton"]) == 12
    assert [im["id"] for im in raw["images"]] == [f + 1 for f in range(NUM_FRAMES)]
    assert [a["id"] for a in raw["annotations"]] == list(range(1, len(raw["annotations"]) + 1))
    n_targets = 0
    for im in raw["images"]:
        f = im["frame"]
        assert im["file_name"] == f"images/{f:06d}.png" and im["seed"] == frame_seed(0, f)
        assert (im["scene"], im["view"]) == divmod(f, VIEWS)
        assert (im["width"], im["height"]) == (W, H)
        assert np.asarray(im["camera_K"]).shape == (3, 3) and np.asarray(im["T_world_from_cam"]).shape == (4, 4)
        img = cv2.imread(str(root / im["file_name"]), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.shape[:2] == (H, W)
        depth = cv2.imread(str(root / im["depth_file"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(root / im["mask_file"]), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and mask.dtype == np.uint16 and depth.shape == mask.shape == (H, W)
        assert 200 < np.median(depth[depth > 0]) < 2000  # millimetres: the table is ~0.5 m away
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        assert anns, f"frame {f} has no object"
        assert {a["instance_id"] for a in anns} <= set(np.unique(mask)) - {0}
        for a in anns:
            binary = coco.annToMask(a)
            assert np.array_equal(binary, (mask == a["instance_id"]).astype(np.uint8))
            assert a["area"] == int(binary.sum()) == int(mask_utils.area(a["segmentation"]))
            ys, xs = np.nonzero(binary)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert len(a["keypoints"]) == 24 and a["num_keypoints"] == sum(v > 0 for v in a["keypoints"][2::3])
            assert np.asarray(a["pose_cam_from_obj"]).shape == (4, 4) and 0 < a["visibility"] <= 1
            assert a["iscrowd"] == 0 and a["segmentation"]["size"] == [H, W]
            assert {"center_px", "center_depth_m", "is_target"} <= set(a)
            n_targets += a["is_target"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["classes"] == ["cube", "ball", "can"]
    assert manifest["counts"]["frames"] == NUM_FRAMES and manifest["counts"]["annotations"] == len(raw["annotations"])
    assert manifest["counts"]["targets"] == n_targets
    assert "pybullet" in manifest["versions"] and manifest["config"]["num_frames"] == NUM_FRAMES
    saved = load_config(GenerateConfig, root / "config.yaml")
    assert saved.num_frames == NUM_FRAMES and saved.out == str(root)
    samples = cv2.imread(str(root / "samples.png"))
    assert samples is not None and samples.shape[1] > 2 * 64  # a grid of 4 cells, 64 px wide each
    assert no_temp_files(root)


def test_annotations_pass_the_shared_coco_validator(reference):
    """Every reader validates with ``sim2real.data.real.coco_from_dict``: generated sets must pass it."""
    from sim2real.data.dataset import CocoDataset
    from sim2real.data.real import load_coco

    assert len(load_coco(reference / "annotations.json")) == NUM_FRAMES
    assert len(CocoDataset(reference)) > 0


def test_jpeg_and_grayscale_camera(scene_file, tmp_path):
    out = tmp_path / "gray"
    generate(make_cfg(out, scene_file, "num_frames=2", "image_format=jpg", "scene.postprocess.grayscale=true"))
    coco = COCO(str(out / "annotations.json"))
    for im in coco.dataset["images"]:
        assert im["file_name"].endswith(".jpg")
        img = cv2.imread(str(out / im["file_name"]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (H, W)  # a gray camera's frames are saved with one channel
    assert coco_writer.committed_frames(out) == {0, 1}


def test_same_bytes_for_any_worker_count(reference, scene_file, tmp_path):
    out = tmp_path / "w2"
    generate(make_cfg(out, scene_file, "workers=2"))
    assert_same_dataset(reference, out)


def test_resume_after_interruption_completes_identically(reference, scene_file, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(reference, out)
    for f in ("annotations.json", "manifest.json", "samples.png"):
        (out / f).unlink()
    # What a kill leaves: frames whose commit marker never got written (files present or not, even
    # garbage from an outside copy), and temp files of interrupted atomic writes.
    (out / "labels/000001.json").unlink()
    (out / "labels/000003.json").unlink()
    (out / "images/000003.png").write_bytes(b"torn")
    (out / "masks/000004.png").unlink()
    (out / "images/.000002.png.k1ll3d.png").write_bytes(b"partial")
    (out / "labels/.000001.json.x0x0x0.json").write_bytes(b"{")
    (out / ".annotations.json.abcdef.json").write_bytes(b"")
    untouched = (out / "images/000000.png").stat().st_mtime_ns
    manifest = generate(make_cfg(out, scene_file, "workers=1"))
    assert manifest["run"]["rendered_now"] == 3 and manifest["run"]["resumed_frames"] == 2
    assert (out / "images/000000.png").stat().st_mtime_ns == untouched  # committed frames kept
    assert_same_dataset(reference, out)
    assert no_temp_files(out)


def test_resume_rechecks_file_hashes(reference, scene_file, tmp_path):
    """Frame files are not fsync-ed: a resumed run finds files a power cut tore or emptied, by hash."""
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    image = out / "images/000002.png"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte off
    image.write_bytes(bytes(data))
    (out / "depth/000001.png").write_bytes(b"")  # emptied (delayed allocation lost at a crash)
    label = out / "labels/000004.json"
    label.write_bytes(label.read_bytes()[:40])  # a torn commit marker
    assert coco_writer.committed_frames(out) == set(range(NUM_FRAMES))  # all files exist...
    assert coco_writer.committed_frames(out, verify=True) == {0, 3}  # ...but only two are intact
    manifest = generate(make_cfg(out, scene_file, "workers=1"))
    assert manifest["run"]["rendered_now"] == 3 and manifest["run"]["resumed_frames"] == 2
    assert_same_dataset(reference, out)


def test_views_of_one_scene_share_objects(reference):
    """Frames 0 and 1 are two views of scene 0: same objects at the same world poses, another camera."""
    labels = [json.loads((reference / f"labels/{f:06d}.json").read_text()) for f in range(3)]

    def world_objects(lab):
        T_wc = np.asarray(lab["T_world_from_cam"])
        return {o["instance_id"]: (o["category_id"], T_wc @ np.asarray(o["pose_cam_from_obj"])) for o in lab["objects"]}

    (a, b, c) = labels
    assert (a["scene"], a["view"], b["scene"], b["view"], c["scene"]) == (0, 0, 0, 1, 1)
    wa, wb = world_objects(a), world_objects(b)
    for iid in set(wa) & set(wb):  # objects visible in both views
        assert wa[iid][0] == wb[iid][0]
        assert np.allclose(wa[iid][1], wb[iid][1], atol=1e-6)
    assert set(wa) & set(wb)
    assert not np.allclose(a["T_world_from_cam"], b["T_world_from_cam"])
    assert a["seed"] != b["seed"] and scene_seed(0, 0) != scene_seed(0, 1)


def test_tasks_hold_whole_scene_groups():
    frames = [1, 2, 3, 4, 5, 8, 9, 10]  # resumed: some frames of groups of 4 already done
    assert _chunks(frames, 1, 4) == [[1, 2, 3], [4, 5], [8, 9, 10]]
    assert _chunks(frames, 3, 4) == [[1, 2, 3], [4, 5, 8, 9, 10]]  # at least 3 frames per task
    assert _chunks(frames, 1, 1) == [[f] for f in frames]
    assert _chunks(frames, 5, 4) == [[1, 2, 3, 4, 5], [8, 9, 10]]


def test_steady_rate_leaves_out_each_workers_first_group():
    # Two workers, groups of 2 frames: worker 7 starts at t=4 (slow start-up), then 1 frame/s;
    # worker 8 starts at t=1, then 2 frames/s. CPU clocks run at half speed (a busy machine).
    stamps = [(4.0 + i, 2.0 + i / 2, 7) for i in range(6)] + [(1.0 + i / 2, 5.0 + i / 4, 8) for i in range(6)]
    rate, cpu_rate, warm = _steady_rate(stamps, 0.0, 2)
    assert warm == 5.0  # worker 7's first group ends at t=5
    assert rate == pytest.approx(1.0 + 2.0) and cpu_rate == pytest.approx((2.0 + 4.0) / 2)
    assert _steady_rate(stamps[:2], 0.0, 2)[0] is None  # nothing after the first group
    assert _steady_rate([], 0.0, 2) == (None, None, None)


@pytest.mark.slow  # two CLI start-ups (~10 s); the in-process resume test above covers the logic
def test_killed_process_resumes_to_the_same_dataset(reference, scene_file, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sim2real", "generate", "--config", "", "--out", str(out), "--workers", "1",
           "--num-frames", str(NUM_FRAMES), "--no-progress", f"scene_file={scene_file}", "grid.num=4",
           "grid.cell_width=64", f"views_per_scene={VIEWS}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if coco_writer.committed_frames(out):  # kill early: a frame takes milliseconds
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"generate ended before it could be killed: {proc.stderr.read().decode()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "annotations.json").exists()
    done = coco_writer.committed_frames(out)
    assert 1 <= len(done) < NUM_FRAMES
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{NUM_FRAMES - len(done)} rendered now, {len(done)} kept" in r.stdout
    assert_same_dataset(reference, out)
    assert no_temp_files(out)


def test_refuses_to_resume_with_another_config(reference, scene_file, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(reference, out)
    with pytest.raises(ResumeError, match=r"seed: 0 -> 1"):
        generate(make_cfg(out, scene_file, "seed=1"))
    with pytest.raises(ResumeError, match=r"scene.camera.width: 64 -> 32"):
        generate(make_cfg(out, scene_file, "scene.camera.width=32"))
    # Settings that do not change any byte may differ.
    generate(make_cfg(out, scene_file, "workers=2", "grid.enabled=false"))
    assert_same_dataset(reference, out)
    # Frame files without a state file cannot be trusted either.
    (out / "generate_state.json").unlink()
    with pytest.raises(ResumeError, match="no generate_state.json"):
        generate(make_cfg(out, scene_file))


def test_rejected_scene_override_writes_nothing_and_the_fix_runs(reference, scene_file, tmp_path):
    out = tmp_path / "fixed"
    with pytest.raises(ValueError, match=r"scene.camera.fxx.*did you mean 'fx'"):
        generate(make_cfg(out, scene_file, "scene.camera.fxx=3"))
    assert not (out / "generate_state.json").exists()
    generate(make_cfg(out, scene_file))  # the corrected re-run is not refused as "a different config"
    assert_same_dataset(reference, out)


def test_shards_merge_into_the_single_run_dataset(reference, scene_file, tmp_path):
    # Shards stride over scene groups ({0, 1}, {2, 3}, {4}): no scene is built by two shards.
    assert shard_frames(NUM_FRAMES, 0, 2, VIEWS) == [0, 1, 4] and shard_frames(NUM_FRAMES, 1, 2, VIEWS) == [2, 3]
    assert shard_frames(NUM_FRAMES, 1, 2) == [1, 3]  # one view per scene: strided frames
    shards = [tmp_path / f"part{k}" for k in range(2)]
    for k, d in enumerate(shards):
        m = generate(make_cfg(d, scene_file, f"shard={k}", "num_shards=2"))
        assert m["counts"]["frames"] == len(shard_frames(NUM_FRAMES, k, 2, VIEWS))
        COCO(str(d / "annotations.json"))  # each shard is a dataset of its own
    merged = tmp_path / "merged"
    assert cli.main(["merge", str(shards[1]), str(shards[0]), "--out", str(merged), "--no-progress"]) == 0
    assert_same_dataset(reference, merged)
    assert json.loads((merged / "manifest.json").read_text())["counts"]["frames"] == NUM_FRAMES
    # Re-running the merge is harmless; a missing or incomplete shard is refused with a reason.
    merge_shards(shards, merged, progress=False)
    assert_same_dataset(reference, merged)
    with pytest.raises(ValueError, match=r"shards \[1\] of 2 are missing"):
        merge_shards(shards[:1], tmp_path / "m2", progress=False)
    (shards[1] / "labels/000003.json").unlink()
    with pytest.raises(ValueError, match=r"shard 1 .* incomplete .*\[3\]"):
        merge_shards(shards, tmp_path / "m3", progress=False)
    # A frame whose file no longer matches the hash in its label is not merged either.
    mask = shards[0] / "masks/000004.png"
    mask.write_bytes(mask.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match=r"shard 0 .* missing or damaged, e.g. \[4\]"):
        merge_shards(shards, tmp_path / "m6", progress=False)
    with pytest.raises(ValueError, match="is one of 1 shards"):
        merge_shards([shards[0], reference], tmp_path / "m4", progress=False)
    other_seed = tmp_path / "other_seed"
    generate(make_cfg(other_seed, scene_file, "seed=1", "num_frames=4", "shard=1", "num_shards=2"))
    with pytest.raises(ValueError, match="different dataset"):
        merge_shards([shards[0], other_seed], tmp_path / "m5", progress=False)


def test_disk_full_is_a_clear_error_and_loses_nothing(reference, scene_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    real_write = coco_writer.atomic_write_bytes
    calls = {"n": 0}

    def write_until_full(path, data):
        calls["n"] += 1
        if calls["n"] > 8:  # 4 files per frame: the 3rd frame's image hits a full disk
            raise OutputError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(coco_writer, "atomic_write_bytes", write_until_full)
    args = ["generate", "--config", "", "--out", str(out), "--workers", "1", "--num-frames", str(NUM_FRAMES),
            "--no-progress", f"scene_file={scene_file}", "grid.num=4", "grid.cell_width=64", f"views_per_scene={VIEWS}"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "disk full while writing" in err and "re-run the same command to resume" in err
    assert coco_writer.committed_frames(out) == {0, 1}
    monkeypatch.setattr(coco_writer, "atomic_write_bytes", real_write)
    assert cli.main(args) == 0
    assert_same_dataset(reference, out)


@pytest.mark.parametrize("overrides, message", [
    (["num_frames=0"], "config key 'num_frames': expected a value in [1, inf], got 0"),
    (["num_frames=-5"], "config key 'num_frames': expected a value in [1, inf], got -5"),
    (["num_frame=3"], "did you mean num_frames"),
    (["image_format=gif"], "expected one of ['png', 'jpg']"),
    (["shard=2", "num_shards=2"], "config key 'shard'"),
    (["scene_file=/no/such/scene.yaml"], "no scene YAML at /no/such/scene.yaml"),
])
def test_config_errors_exit_2_with_clear_message(overrides, message, tmp_path, capsys):
    rc = cli.main(["generate", "--config", "", "--out", str(tmp_path / "x"), "--no-progress", *overrides])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("sim2real generate: error:") and message in err


def test_unwritable_output_folder(tmp_path, scene_file, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rc = cli.main(["generate", "--config", "", "--out", str(blocker / "ds"), "--no-progress",
                   f"scene_file={scene_file}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"output folder {blocker / 'ds'} is not writable" in err


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_missing_mesh_file_is_named(tmp_path, capsys, workers):
    scene = tmp_path / "scene.yaml"
    scene.write_text(yaml.safe_dump({**TINY_SCENE, "objects": [{"class": "part", "mesh": "meshes/part.obj"}],
                                     "num_distractors": [0, 0]}))
    rc = cli.main(["generate", "--config", "", "--out", str(tmp_path / "ds"), "--no-progress",
                   f"--workers={workers}", f"scene_file={scene}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "scene.objects[0].mesh" in err and "meshes/part.obj" in err
    assert not (tmp_path / "ds" / "annotations.json").exists()


def test_empty_object_list_is_refused(tmp_path, scene_file, capsys):
    rc = cli.main(["generate", "--config", "", "--out", str(tmp_path / "ds"), "--no-progress",
                   f"scene_file={scene_file}", "scene.objects=[]"])
    assert rc == 2
    assert "scene.objects" in capsys.readouterr().err


def test_default_config_file_is_valid():
    cfg = load_config(GenerateConfig, ROOT / "configs/generate.yaml")
    assert cfg.num_frames >= 1 and cfg.image_format in ("png", "jpg")
    assert (ROOT / cfg.scene_file).is_file()
    with pytest.raises(ConfigError, match="num_shards"):
        load_config(GenerateConfig, ROOT / "configs/generate.yaml", ["num_shards=100000"])
