"""``sim2real live`` end to end on real footage with a real (untrained-head) PerceptionModel; every frame's
JSONL record holds every decoded instance."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sim2real.cli import main
from sim2real.data.images import load_image
from sim2real.deploy.backends import TorchBackend
from sim2real.deploy.config import LiveConfig, RetryConfig
from sim2real.deploy.export import export_onnx
from sim2real.deploy.loop import run_live
from sim2real.deploy.tta import batchnorm_layers
from sim2real.eval.instances import decode_maps, instances_to_original, select
from sim2real.io import read_jsonl
from sim2real.models import ModelConfig, build_model, load_checkpoint, save_checkpoint
from sim2real.models.heads import HeadConfig
from sim2real.data.real_visp import visp_cube_dir

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.needs_data("vtest", "visp")
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
VISP = visp_cube_dir()
INPUT_HW = [96, 128]
# The untrained head's heatmaps sit near their 0.1 prior: the checkpoint reports from 0.11, which leaves
# a few instances per frame (0-6 on these frames) for the loop to decode, record and draw.
SCORE_THRESH = 0.11


def by_hand(model, img, thr=SCORE_THRESH) -> list[dict]:
    """The instances of ``img`` as Preprocess + model + numpy decode + meta.to_original give them."""
    x, meta = model.make_preprocess()(img)
    with torch.inference_mode():
        out = model(x[None])
    maps = {k: v.numpy() for k, v in out.items() if k not in ("raw", "embed")}
    inst = select(instances_to_original(decode_maps(maps, score_thresh=thr, **model.decode_options()), [meta]), 0)
    return [{"label": int(inst["label"][j]), "center": inst["center"][j], "box": inst["box"][j],
             "keypoints": inst["keypoints"][j]} for j in range(len(inst["label"]))]


def assert_same_instances(rec: dict, expected: list[dict], classes, atol=0.02) -> None:
    got = rec["instances"]
    assert len(got) == len(expected), (len(got), len(expected))
    for g, e in zip(got, expected):
        assert g["class_id"] == e["label"] and g["class"] == classes[e["label"]]
        np.testing.assert_allclose(g["center"], e["center"], atol=atol)
        np.testing.assert_allclose(g["box"], e["box"], atol=atol)
        np.testing.assert_allclose(np.asarray(g["keypoints"])[:, :2], e["keypoints"], atol=atol)


def count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot reopen {path}"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    torch.manual_seed(0)
    cfg = ModelConfig(input_hw=INPUT_HW, head=HeadConfig(score_thresh=SCORE_THRESH, stride=16))
    model = build_model(cfg, classes=["cube", "cylinder"]).eval()
    ckpt = save_checkpoint(d / "model.pt", model)
    # 20-frame real clip (vtest.avi, people walking), downscaled to keep the test fast.
    cap = cv2.VideoCapture(VTEST)
    clip = d / "clip.mp4"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for _ in range(20):
        ok, f = cap.read()
        assert ok
        w.write(cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA))
    w.release()
    cap.release()
    # Gray real frames (ViSP cube, development frames 0-99 only).
    frames = d / "visp_frames"
    frames.mkdir()
    for i in range(0, 60):
        (frames / f"image{i:04d}.pgm").symlink_to(VISP / f"image{i:04d}.pgm")
    return {"dir": d, "ckpt": Path(ckpt), "clip": clip, "frames": frames, "model": model}


def _cfg(assets, tmp_path, **kw) -> LiveConfig:
    base = dict(checkpoint=str(assets["ckpt"]), source=str(assets["clip"]), output=str(tmp_path / "annotated.mp4"),
                jsonl=str(tmp_path / "preds.jsonl"), run_dir=str(tmp_path / "run"), threads=1)
    base.update(kw)
    return LiveConfig(**base)


def test_headless_video_run_writes_playable_video_jsonl_and_stats(assets, tmp_path):
    stats = run_live(_cfg(assets, tmp_path), log=lambda m: None)
    assert count_frames(tmp_path / "annotated.mp4") == 20
    recs = read_jsonl(tmp_path / "preds.jsonl")
    assert [r["frame"] for r in recs] == list(range(20))
    r = recs[0]
    assert list(r) == ["frame", "timestamp", "media_time_s", "instances"] and r["media_time_s"] == 0.0
    insts = [i for rec in recs for i in rec["instances"]]
    assert insts, "no instance in 20 frames at the checkpoint's threshold"
    for i in insts:
        # + the 6D pose fields; this model has neither a camera nor object sizes: no pose, and why
        assert list(i) == ["class", "class_id", "score", "box", "center", "keypoints", "pose", "center_3d",
                           "reproj_px", "pose_status"]
        assert i["pose"] is None and i["pose_status"] == "no_camera"
        assert i["class"] == ["cube", "cylinder"][i["class_id"]] and SCORE_THRESH <= i["score"] <= 1
        assert len(i["keypoints"]) == 8 and len(i["box"]) == 4 and len(i["center"]) == 2
    saved = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert saved["frames"] == 20 and saved["fps"] > 0 and saved["stopped_by"] == "end of source"
    for stage in ("wait", "preprocess", "infer", "draw"):
        assert {"p50", "p95", "p99"} <= set(saved["latency_ms"][stage])
    assert saved["delivery"] == "all" and saved["capture"]["dropped"] == 0
    assert saved["detections"] == {"score_thresh": SCORE_THRESH, "instances": len(insts),
                                   "per_frame_mean": round(len(insts) / 20, 4)}
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "run_info.json").is_file()
    assert stats["outputs"]["video_frames"] == 20


def test_outputs_are_in_original_pixels_through_the_training_preprocess(assets, tmp_path):
    """A gray PGM folder: the loop's record equals Preprocess + model + numpy decoding + meta.to_original
    by hand, instance for instance."""
    stats = run_live(_cfg(assets, tmp_path, source=str(assets["frames"]), max_frames=3, output=None), log=lambda m: None)
    recs = read_jsonl(tmp_path / "preds.jsonl")
    assert len(recs) == 3
    assert "draw" not in stats["latency_ms"]  # no --display, no --output: nothing is drawn
    model = load_checkpoint(assets["ckpt"])
    img = load_image(assets["frames"] / "image0002.pgm")
    assert img.ndim == 2  # gray camera frame, as in training
    expected = by_hand(model, img)
    assert expected  # measured: 4 instances on this frame
    assert_same_instances(recs[2], expected, model.classes)
    _, meta = model.make_preprocess()(img)
    assert meta.orig_hw == (480, 640) and meta.scale == (0.2, 0.2)  # really mapped back from 128x96


class MonoCamera16:
    """A 16-bit mono camera (1-channel uint16 frames) showing the ViSP scene."""

    def __init__(self, frames):
        self.frames = [(f.astype(np.uint16) << 8)[:, :, None] for f in frames]
        self.i = 0

    def read(self):
        if self.i >= len(self.frames):
            return False, None
        self.i += 1
        return True, self.frames[self.i - 1]

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def test_mono_16bit_camera_frames_get_the_training_conversion(assets, tmp_path):
    gray = [load_image(assets["frames"] / f"image{i:04d}.pgm") for i in range(2)]
    stats = run_live(_cfg(assets, tmp_path, output=None), backend=TorchBackend(assets["model"]),
                     opener=lambda: MonoCamera16(gray), live=False, log=lambda m: None)
    assert stats["frames"] == 2
    recs = read_jsonl(tmp_path / "preds.jsonl")
    model = assets["model"]
    # the 16-bit frame is converted back to these 8-bit gray pixels, then processed as training does
    assert_same_instances(recs[1], by_hand(model, gray[1]), model.classes)


class DroppingCapture:
    """A camera that delivers ``n`` real frames and then read() returns False (unplugged)."""

    def __init__(self, frames, n):
        self.frames, self.n, self.i = frames, n, 0

    def read(self):
        if self.i >= self.n:
            return False, None
        f = self.frames[self.i % len(self.frames)]
        self.i += 1
        return True, f.copy()

    def get(self, prop):
        return 10.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


def test_stream_failing_mid_way_is_retried_then_ends_cleanly(assets, tmp_path):
    cap = cv2.VideoCapture(str(assets["clip"]))
    frames = [cap.read()[1] for _ in range(4)]
    cap.release()
    opens = []

    def opener():
        opens.append(1)
        return DroppingCapture(frames, 6 if len(opens) == 1 else 0)

    logs = []
    cfg = _cfg(assets, tmp_path, drop="all", retry=RetryConfig(max_retries=3, base_s=0.01, max_s=0.02))
    stats = run_live(cfg, backend=TorchBackend(assets["model"]), opener=opener, live=True, log=logs.append)
    assert stats["frames"] == 6 and stats["capture"]["retries"] == 3 and len(opens) == 4
    assert "did not come back after 3 retries" in stats["stopped_by"]
    assert any("retry 3/3" in m for m in logs)
    assert count_frames(tmp_path / "annotated.mp4") == 6 and len(read_jsonl(tmp_path / "preds.jsonl")) == 6
    assert stats["stream_lost"] is True


def test_live_stream_lost_for_good_exits_nonzero_with_outputs_kept(assets, tmp_path, monkeypatch, capsys):
    """Issue 14: a camera/rtsp stream that stays down after its retries is a failure (exit 1, one line
    naming the stream), not a clean end; the video and the JSONL are still finalized."""
    import sim2real.deploy.loop as loop

    cap = cv2.VideoCapture(str(assets["clip"]))
    frames = [cap.read()[1] for _ in range(4)]
    cap.release()
    opens = []

    def fake_open(spec, *a, **kw):
        opens.append(spec.text)
        return DroppingCapture(frames, 5 if len(opens) == 1 else 0)

    monkeypatch.setattr(loop, "open_source", fake_open)
    url = "rtsp://cam.invalid/stream"
    rc = main(["live", "--config", str(ROOT / "configs/live.yaml"), "--checkpoint", str(assets["ckpt"]),
               "--source", url, "--no-drop", "--output", str(tmp_path / "out.mp4"), "--jsonl",
               str(tmp_path / "preds.jsonl"), "--run-dir", str(tmp_path / "run"), "--max-retries", "2",
               "retry.base_s=0.01", "retry.max_s=0.02"])
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("sim2real live: error:")
    assert url in err and "did not come back after 2 retries" in err and "out.mp4" in err
    assert opens and set(opens) == {url}
    assert count_frames(tmp_path / "out.mp4") == 5 and len(read_jsonl(tmp_path / "preds.jsonl")) == 5
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["stream_lost"] is True


def test_file_source_end_is_a_normal_end_exit_0(assets, tmp_path, capsys):
    rc = main(["live", "--config", str(ROOT / "configs/live.yaml"), "--checkpoint", str(assets["ckpt"]),
               "--source", str(assets["clip"]), "--jsonl", str(tmp_path / "preds.jsonl"),
               "--run-dir", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["stream_lost"] is False and stats["stopped_by"] == "end of source"
    assert len(read_jsonl(tmp_path / "preds.jsonl")) == 20


def test_unopenable_sources_are_clear_errors(assets, tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    rc = main(["live", "--config", str(ROOT / "configs/live.yaml"), "--checkpoint", str(assets["ckpt"]),
               "--source", str(missing), "--run-dir", str(tmp_path / "r")])
    assert rc == 2 and str(missing) in capsys.readouterr().err
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"\x00" * 100)
    rc = main(["live", "--config", str(ROOT / "configs/live.yaml"), "--checkpoint", str(assets["ckpt"]),
               "--source", str(broken), "--run-dir", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot open file source" in err and "broken.avi" in err
    assert not (tmp_path / "r2").exists()  # nothing written for a source that never opened


def test_display_without_gui_is_a_clear_error(assets, tmp_path):
    with pytest.raises(ValueError, match="--output"):
        run_live(_cfg(assets, tmp_path, display=True), log=lambda m: None)


def test_onnx_backend_runs_from_the_onnx_file_alone(assets, tmp_path):
    onnx_path = export_onnx(assets["model"], tmp_path / "model.onnx", batch=1)
    run_live(_cfg(assets, tmp_path, checkpoint=str(onnx_path), max_frames=5, output=None,
                  jsonl=str(tmp_path / "onnx.jsonl")), log=lambda m: None)
    run_live(_cfg(assets, tmp_path, max_frames=5, output=None, jsonl=str(tmp_path / "torch.jsonl"),
                  run_dir=str(tmp_path / "run2")), log=lambda m: None)
    a, b = read_jsonl(tmp_path / "onnx.jsonl"), read_jsonl(tmp_path / "torch.jsonl")
    assert len(a) == len(b) == 5
    assert sum(len(r["instances"]) for r in a) >= 2
    for ra, rb in zip(a, b):
        assert [i["class"] for i in ra["instances"]] == [i["class"] for i in rb["instances"]]
        for ia, ib in zip(ra["instances"], rb["instances"]):
            np.testing.assert_allclose(ia["center"], ib["center"], atol=0.05)
            np.testing.assert_allclose(ia["box"], ib["box"], atol=0.05)
            assert ia["score"] == pytest.approx(ib["score"], abs=2e-4)
    saved = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert saved["backend"]["backend"] == "onnxruntime"
    # the threshold came from the ONNX metadata (the checkpoint's head.score_thresh)
    assert saved["detections"]["score_thresh"] == saved["backend"]["score_thresh"] == SCORE_THRESH


def test_tta_bn_updates_statistics_and_drift_is_logged(assets, tmp_path):
    model = load_checkpoint(assets["ckpt"])
    before = [bn.running_mean.clone() for bn in batchnorm_layers(model)]
    cfg = _cfg(assets, tmp_path, max_frames=12, output=None)
    cfg.tta.enabled, cfg.tta.every, cfg.tta.buffer = True, 4, 4
    cfg.drift.reference, cfg.drift.max_reference = str(assets["frames"]), 8
    cfg.drift.window, cfg.drift.every, cfg.drift.threshold = 4, 4, DRIFT_THRESHOLD
    logs = []
    stats = run_live(cfg, backend=TorchBackend(model), log=logs.append)
    after = [bn.running_mean for bn in batchnorm_layers(model)]
    assert stats["tta"]["bn_updates"] == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert stats["drift"]["checks"] == 3 and stats["drift"]["alarms"] == 1
    assert stats["drift"]["last"]["drift/mmd2"] > 0  # street scene vs the ViSP desk
    assert any("feature drift" in m for m in logs)
    logged = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len([r for r in logged if "drift/mmd2" in r]) == 3



# Measured (seeded untrained model, reference = 8 of ViSP frames 0-59, windows of 4 frames):
# ViSP frames 60-71 give mmd2 0.51-0.59, the street clip 1.37-1.44. 1.0 sits between with margin.
DRIFT_THRESHOLD = 1.0


def test_drift_threshold_separates_in_distribution_from_shifted_frames(assets, tmp_path):
    live = tmp_path / "visp_live"  # more ViSP desk frames, none of them in the reference folder
    live.mkdir()
    for i in range(60, 72):
        (live / f"image{i:04d}.pgm").symlink_to(VISP / f"image{i:04d}.pgm")
    seen = {}
    for name, source in (("same", live), ("shifted", assets["clip"])):
        out = tmp_path / name
        cfg = _cfg(assets, out, source=str(source), max_frames=12, output=None)
        cfg.drift.reference, cfg.drift.max_reference = str(assets["frames"]), 8
        cfg.drift.window, cfg.drift.every, cfg.drift.threshold = 4, 4, DRIFT_THRESHOLD
        logs = []
        stats = run_live(cfg, log=logs.append)
        seen[name] = [r["drift/mmd2"] for r in read_jsonl(out / "run" / "metrics.jsonl") if "drift/mmd2" in r]
        assert stats["drift"]["checks"] == 3 and len(seen[name]) == 3, name
        if name == "same":
            assert stats["drift"]["alarms"] == 0 and not any("feature drift" in m for m in logs), seen
        else:
            assert stats["drift"]["alarms"] == 1 and any("feature drift" in m for m in logs), seen
    assert max(seen["same"]) < DRIFT_THRESHOLD < min(seen["shifted"]), seen

def test_tta_bn_needs_torch_backend(assets, tmp_path):
    onnx_path = export_onnx(assets["model"], tmp_path / "m.onnx")
    cfg = _cfg(assets, tmp_path, checkpoint=str(onnx_path))
    cfg.tta.enabled = True
    with pytest.raises(ValueError, match="torch backend"):
        run_live(cfg, log=lambda m: None)


def test_sigint_in_process_stops_gracefully(assets, tmp_path):
    """The SIGINT handler: the loop finishes its frame, closes outputs, reports 'interrupted'."""
    jsonl = tmp_path / "preds.jsonl"

    def interrupt_after_frames():
        t0 = time.time()
        while time.time() - t0 < 30 and not (jsonl.exists() and len(read_jsonl(jsonl)) >= 2):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    killer = threading.Thread(target=interrupt_after_frames, daemon=True)
    cfg = _cfg(assets, tmp_path, source=str(assets["frames"]), drop="latest", realtime=True, folder_fps=20.0)
    # The handler before the loop: Python's default_int_handler, or SIG_IGN when the test run itself was
    # started in the background by a non-interactive shell (SIGINT ignored at startup, e.g. `nohup ... &`).
    before = signal.getsignal(signal.SIGINT)
    killer.start()
    stats = run_live(cfg, backend=TorchBackend(assets["model"]), log=lambda m: None)
    killer.join(5)
    assert stats["stopped_by"].startswith("interrupted") and 2 <= stats["frames"] < 60
    assert count_frames(tmp_path / "annotated.mp4") == stats["frames"] == len(read_jsonl(jsonl))
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


@pytest.mark.slow
def test_sigint_finalizes_video_and_writes_stats(assets, tmp_path):
    """Ctrl-C on a running ``python -m sim2real live``: the mp4 is playable and stats are saved."""
    out, jsonl, run_dir = tmp_path / "ann.mp4", tmp_path / "p.jsonl", tmp_path / "run"
    cmd = [sys.executable, "-m", "sim2real", "live", "--checkpoint", str(assets["ckpt"]),
           "--source", str(assets["frames"]), "--output", str(out), "--jsonl", str(jsonl),
           "--run-dir", str(run_dir), "--threads", "1", "--drop", "--realtime", "folder_fps=10"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            if jsonl.exists() and len(read_jsonl(jsonl)) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"live exited early: {proc.stdout.read()}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["stopped_by"].startswith("interrupted")
    assert 3 <= stats["frames"] < 60
    assert count_frames(out) == stats["frames"] == len(read_jsonl(jsonl))
    assert "interrupted" in log and "p95" in log


def test_live_records_match_the_predict_record_layout(assets):
    """Same fields and rounding as ``sim2real predict`` (contracts.md JSONL record)."""
    from sim2real.deploy.predictions import to_records
    from sim2real.eval import predict_arrays, prediction_record

    model = assets["model"]
    img = load_image(assets["frames"] / "image0005.pgm")
    (_, pred), = list(predict_arrays(model, [("f", img)]))
    expected = prediction_record(pred, model.classes, frame=5)
    backend = TorchBackend(model)
    x, meta = backend.prepare(img)
    rec = to_records(backend(x[None]), [meta], model.classes, backend.score_thresh,
                     **backend.decode_options, where=[{"frame": 5}])[0]
    assert list(rec) == list(expected) == ["frame", "instances"]
    assert len(rec["instances"]) == len(expected["instances"]) >= 1
    for got, exp in zip(rec["instances"], expected["instances"]):
        assert list(got) == list(exp)
        assert (got["class"], got["class_id"]) == (exp["class"], exp["class_id"])
        assert got["score"] == pytest.approx(exp["score"], abs=2e-4)
        for key in ("box", "center", "keypoints"):
            np.testing.assert_allclose(got[key], exp[key], atol=0.02)


def test_live_jsonl_holds_every_instance_from_the_score_threshold(assets, tmp_path, capsys):
    """--score-thresh: every instance at or above it is in the frame's record (and drawn), in the
    decoder's order; several per frame at a low threshold. Without it the checkpoint's applies."""
    frames = assets["frames"]
    low = 0.06
    rc = main(["live", "--config", str(ROOT / "configs/live.yaml"), "--checkpoint", str(assets["ckpt"]),
               "--source", str(frames), "--max-frames", "3", "--score-thresh", str(low), "--threads", "1",
               "--jsonl", str(tmp_path / "low.jsonl"), "--output", str(tmp_path / "low.mp4"),
               "--run-dir", str(tmp_path / "run_low")])
    assert rc == 0, capsys.readouterr().err
    recs = read_jsonl(tmp_path / "low.jsonl")
    model = load_checkpoint(assets["ckpt"])
    counts = []
    for r in recs:
        img = load_image(frames / f"image{r['frame']:04d}.pgm")
        assert_same_instances(r, by_hand(model, img, low), model.classes)
        assert all(i["score"] >= low for i in r["instances"])
        counts.append(len(r["instances"]))
    # measured: 9-10 instances of both classes per frame at 0.06
    assert min(counts) >= 2 and {i["class"] for r in recs for i in r["instances"]} == {"cube", "cylinder"}, counts
    stats = json.loads((tmp_path / "run_low" / "stats.json").read_text())
    assert stats["detections"]["score_thresh"] == low and stats["detections"]["instances"] == sum(counts)
    # default: the checkpoint's head.score_thresh, fewer instances
    run_live(_cfg(assets, tmp_path, source=str(frames), max_frames=3, output=None,
                  jsonl=str(tmp_path / "default.jsonl"), run_dir=str(tmp_path / "run_def")), log=lambda m: None)
    default = read_jsonl(tmp_path / "default.jsonl")
    for r in default:
        img = load_image(frames / f"image{r['frame']:04d}.pgm")
        assert_same_instances(r, by_hand(model, img, SCORE_THRESH), model.classes)
    assert sum(len(r["instances"]) for r in default) < sum(counts)


# ---- issue 14: outputs on read-only or full disks -----------------------------------------------------
# Root ignores folder permissions, so a read-only location is a path under /sys (not writable even for
# root) and a full disk is simulated where the bytes go (as test_generate's disk-full test does).

def _live_args(assets, tmp_path, *extra):
    return ["live", "--config", str(ROOT / "configs/live.yaml"), "--checkpoint", str(assets["ckpt"]),
            "--source", str(assets["clip"]), "--run-dir", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize("flag", ["--output", "--jsonl"])
def test_read_only_live_output_is_a_one_line_error(assets, tmp_path, capsys, flag):
    target = "/sys/sim2real_test/out." + ("mp4" if flag == "--output" else "jsonl")
    rc = main(_live_args(assets, tmp_path, flag, target))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("sim2real live: error:") and "/sys/sim2real_test" in err
    assert "Traceback" not in err
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["frames"] == 0


class _FillingFile:
    """A text file on a disk that fills up after ``room`` writes (ENOSPC from then on)."""

    def __init__(self, fh, room):
        self.fh, self.room = fh, room

    def write(self, text):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        return self.fh.write(text)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_jsonl_on_a_full_disk_keeps_lines_and_video(assets, tmp_path, monkeypatch, capsys):
    import builtins

    import sim2real.io as sio

    def filling_open(path, mode="r", *a, **kw):
        fh = builtins.open(path, mode, *a, **kw)
        return _FillingFile(fh, 3) if str(path).endswith("preds.jsonl") and "w" in mode else fh

    monkeypatch.setattr(sio, "open", filling_open, raising=False)
    rc = main(_live_args(assets, tmp_path, "--output", str(tmp_path / "out.mp4"), "--jsonl",
                         str(tmp_path / "preds.jsonl")))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and str(tmp_path / "preds.jsonl") in err and "No space left" in err
    assert "3 line(s) written before are kept" in err and "disk is full" in err
    assert [r["frame"] for r in read_jsonl(tmp_path / "preds.jsonl")] == [0, 1, 2]
    assert count_frames(tmp_path / "out.mp4") == 4  # the 4th frame was drawn before its JSONL line failed
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["stopped_by"].startswith("output error") and stats["outputs"]["jsonl_records"] == 3


def test_video_that_cannot_be_finalized_still_closes_jsonl_and_stats(assets, tmp_path, monkeypatch, capsys):
    import sim2real.deploy.video_writer as vw

    real_replace = os.replace

    def full_replace(src, dst):
        if str(dst).endswith("out.mp4"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(vw.os, "replace", full_replace)
    rc = main(_live_args(assets, tmp_path, "--output", str(tmp_path / "out.mp4"), "--jsonl",
                         str(tmp_path / "preds.jsonl"), "--max-frames", "5"))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and str(tmp_path / "out.mp4") in err and "No space left" in err
    assert len(read_jsonl(tmp_path / "preds.jsonl")) == 5
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["frames"] == 5
    assert not list(tmp_path.glob(".out.mp4.*"))  # no temporary video left behind


@pytest.mark.parametrize("jsonl", [False, True])
def test_real_full_disk_is_a_one_line_error(assets, tmp_path, jsonl, tmpfs_mountable):
    """A real 8 KiB tmpfs (private mount namespace): OpenCV's video writer never reports the full disk,
    so the incomplete video is detected at close; a JSONL write fails at once. One line, exit 2."""
    disk = tmp_path / "disk"
    disk.mkdir()
    cmd = [sys.executable, "-m", "sim2real", "live", "--config", str(ROOT / "configs/live.yaml"),
           "--checkpoint", str(assets["ckpt"]), "--source", str(assets["clip"]), "--output", str(disk / "out.mp4"),
           "--run-dir", str(tmp_path / "run")] + (["--jsonl", str(disk / "preds.jsonl")] if jsonl else [])
    script = f"mount -t tmpfs -o size=8k tmpfs {disk} && exec " + " ".join(f"'{c}'" for c in cmd)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    err = [ln for ln in res.stderr.splitlines()
           if (ln.startswith("sim2real") and not ln.startswith("sim2real live: warning:")) or "Traceback" in ln]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("sim2real live: error:"), res.stderr[-2000:]
    assert str(disk / ("preds.jsonl" if jsonl else "out.mp4")) in err[0]
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())  # written outside the full disk
    assert stats["frames"] >= 1


def test_overlapped_and_serial_loops_write_the_same_records(assets, tmp_path):
    """The threaded pipeline (capture+resize / inference / decoding) and the single-thread loop give
    identical predictions, every frame, in order; the stats say which ran."""
    recs = {}
    for pipe in ("threads", "serial"):
        stats = run_live(_cfg(assets, tmp_path, source=str(assets["frames"]), max_frames=12, output=None,
                              pipeline=pipe, jsonl=str(tmp_path / f"{pipe}.jsonl"), run_dir=str(tmp_path / pipe)),
                         log=lambda m: None)
        assert stats["pipeline"] == pipe and stats["frames"] == 12 and stats["capture"]["dropped"] == 0
        assert stats["latency_ms"]["total"]["p99"] >= stats["latency_ms"]["infer"]["p50"] > 0
        recs[pipe] = [{k: v for k, v in r.items() if k != "timestamp"} for r in read_jsonl(tmp_path / f"{pipe}.jsonl")]
    assert [r["frame"] for r in recs["threads"]] == list(range(12))
    assert recs["threads"] == recs["serial"] and sum(len(r["instances"]) for r in recs["serial"]) >= 3


def test_overlapped_loop_on_a_live_camera_drops_stale_frames_and_counts_them(assets, tmp_path):
    """Latest-frame delivery through the inference thread: a camera faster than the model loses
    frames (counted), never queues them; every processed frame is newer than the one before."""
    frames = [load_image(assets["frames"] / f"image{i:04d}.pgm") for i in range(4)]

    class FastCamera(DroppingCapture):
        def read(self):
            time.sleep(0.002)  # a 500 FPS camera
            return super().read()

    opens = []

    def opener():  # 150 frames, then unplugged for good
        opens.append(1)
        return FastCamera(frames, 150 if len(opens) == 1 else 0)

    stats = run_live(_cfg(assets, tmp_path, source="0", output=None, drop="latest",
                          retry=RetryConfig(max_retries=1, base_s=0.01, max_s=0.01)),
                     opener=opener, live=True, log=lambda m: None)
    recs = read_jsonl(tmp_path / "preds.jsonl")
    idx = [r["frame"] for r in recs]
    assert stats["capture"]["dropped"] > 0 and idx == sorted(set(idx))
    assert stats["capture"]["frames_read"] == 150 == len(idx) + stats["capture"]["dropped"]


def test_pipeline_threads_leave_a_core_only_from_four_cores():
    from sim2real.deploy.backends import pipeline_threads

    assert [pipeline_threads(n) for n in (1, 2, 3, 4, 8)] == [1, 2, 3, 3, 7]


def test_new_loop_matches_the_training_preprocessing_loop_on_real_frames(assets, tmp_path):
    """Parity on real ViSP frames: the uint8 fast path (one cv2 resize, normalisation in the ONNX
    graph) vs the training float preprocessing + torch, instance by instance (at this 640x480 ->
    128x96 scale both resize with INTER_AREA: agreement to float rounding)."""
    onnx_path = export_onnx(assets["model"], tmp_path / "model.onnx", batch=1)
    run_live(_cfg(assets, tmp_path, checkpoint=str(onnx_path), source=str(assets["frames"]), max_frames=10,
                  output=None), log=lambda m: None)
    recs = read_jsonl(tmp_path / "preds.jsonl")
    model = assets["model"]
    n = 0
    for rec in recs:
        expected = by_hand(model, load_image(assets["frames"] / f"image{rec['frame']:04d}.pgm"))
        assert_same_instances(rec, expected, model.classes, atol=0.02)
        n += len(expected)
    assert len(recs) == 10 and n >= 5
