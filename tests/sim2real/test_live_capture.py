"""Capture thread, backoff, sources, video writer, stats, drift: the live loop's parts on their own."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from sim2real.deploy.capture import Backoff, CaptureThread
from sim2real.deploy.drift import DriftMonitor, median_bandwidth, mmd2_rbf
from sim2real.deploy.latency import LatencyStats, format_summary
from sim2real.deploy.overlay import class_color, draw_record, draw_status
from sim2real.deploy.sources import SourceError, open_source, parse_source
from sim2real.deploy.video_writer import VideoOutput

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


class FakeCapture:
    """Yields ``n_ok`` frames, then read() returns False forever (a camera unplugged)."""

    def __init__(self, n_ok: int, start: int = 0):
        self.n_ok, self.i, self.start, self.released = n_ok, 0, start, False

    def read(self):
        if self.i >= self.n_ok:
            return False, None
        self.i += 1
        img = np.full((8, 8, 3), (self.start + self.i) % 256, np.uint8)
        return True, img

    def get(self, prop):
        return 0.0

    def release(self):
        self.released = True


def _drain(cap: CaptureThread, timeout: float = 10.0) -> list:
    out = []
    t0 = time.time()
    while time.time() - t0 < timeout:
        f = cap.get(timeout=timeout)
        if f is None:
            return out
        out.append(f)
    raise AssertionError("capture did not end")


def test_backoff_is_bounded_exponential():
    assert list(Backoff(max_retries=5, base_s=0.5, factor=2.0, max_s=3.0).delays()) == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_stream_that_drops_is_retried_with_backoff_then_ends_cleanly():
    opened, logs = [], []

    def opener():
        cap = FakeCapture(6 if not opened else 0)  # only the first connection delivers frames
        opened.append(cap)
        return cap

    t0 = time.perf_counter()
    cap = CaptureThread(opener, live=True, drop=False, backoff=Backoff(max_retries=3, base_s=0.02, max_s=0.05),
                        name="fake-cam", log=logs.append).start()
    frames = _drain(cap)
    cap.stop()
    assert [f.index for f in frames] == list(range(6))
    assert cap.stats.retries == 3 and len(opened) == 1 + 3
    assert time.perf_counter() - t0 >= 0.02 + 0.04 + 0.05 - 1e-3  # waited the backoff delays
    assert "dropped and did not come back after 3 retries" in cap.stats.end_reason
    assert any("retry 3/3" in m for m in logs) and all(c.released for c in opened)
    assert cap.error is None


def test_stream_recovers_after_a_reconnect():
    plan = [4, "raise", 3]  # frames per connection; "raise" = reopen fails

    def opener():
        n = plan.pop(0) if plan else 0
        if n == "raise":
            raise OSError("camera busy")
        return FakeCapture(n)

    cap = CaptureThread(opener, live=True, drop=False, backoff=Backoff(max_retries=2, base_s=0.01, max_s=0.01),
                        log=lambda m: None).start()
    frames = _drain(cap)
    assert len(frames) == 7 and [f.index for f in frames] == list(range(7))
    assert cap.stats.reconnects == 1 and cap.stats.retries == 2 + 2


def test_file_end_is_a_normal_end_not_retried():
    cap = CaptureThread(lambda: FakeCapture(5), live=False, drop=False, fps=10.0).start()
    frames = _drain(cap)
    assert len(frames) == 5 and cap.stats.retries == 0 and cap.stats.end_reason == "end of source"
    assert frames[-1].media_time_s == pytest.approx(0.4)


def test_latest_frame_mode_drops_stale_frames():
    cap = CaptureThread(lambda: FakeCapture(40), live=True, drop=True, pace_fps=400.0,
                        backoff=Backoff(max_retries=0)).start()
    got = []
    while (f := cap.get(timeout=5)) is not None:
        got.append(f.index)
        time.sleep(0.02)  # a model slower than the camera
    assert cap.stats.dropped > 0
    assert len(got) + cap.stats.dropped == cap.stats.frames_read == 40
    assert got == sorted(got)


def test_unknown_and_unopenable_sources_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        parse_source(str(tmp_path / "nope.mp4"))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="broken.mp4"):
        open_source(parse_source(str(bad)))
    with pytest.raises(SourceError, match="no image files"):
        open_source(parse_source(str(tmp_path)))
    assert parse_source("0").kind == "device" and parse_source("rtsp://cam/1").is_live
    assert parse_source("http://cam/video").is_live and not parse_source("https://host/clip.mp4?x=1").is_live


def test_folder_source_skips_a_corrupt_frame(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8), 50 * i, np.uint8))
    (tmp_path / "f1.png").write_bytes(b"garbage")
    logs = []
    cap = open_source(parse_source(str(tmp_path)), log=logs.append)
    frames = []
    while (r := cap.read())[0]:
        frames.append(r[1])
    assert [int(f[0, 0]) for f in frames] == [0, 100] and frames[0].ndim == 2
    assert cap.skipped == [str(tmp_path / "f1.png")] and "f1.png" in logs[0]


def test_video_output_is_playable_with_every_frame(tmp_path):
    out = VideoOutput(tmp_path / "a.mp4", fps=10)
    for i in range(7):
        out.write(np.full((48, 64, 3), 30 * i, np.uint8))
    path = out.close()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    assert path.suffix == ".mp4" and n == 7
    assert not list(tmp_path.glob(".a.mp4.*"))  # no temporary file left behind


def test_overlay_draws_every_instance_in_its_class_colour_and_status():
    img = np.zeros((120, 160, 3), np.uint8)
    rec = {"frame": 0, "instances": [
        {"class": "cube", "class_id": 0, "score": 0.9, "box": [10, 20, 60, 70], "center": [35, 45],
         "keypoints": [[10 + 5 * i, 20 + 5 * i, 0.9 if i % 2 else 0.1] for i in range(8)]},
        {"class": "cylinder", "class_id": 1, "score": 0.6, "box": [90, 60, 150, 110], "center": [120, 85],
         "keypoints": []}]}
    draw_record(img, rec)
    draw_status(img, 12.5, {"infer": 30.0}, dropped=2)
    assert class_color(0) != class_color(1)
    assert img[45, 35].tolist() == list(class_color(0)) and img[85, 120].tolist() == list(class_color(1))
    assert img[110, 150].tolist() == list(class_color(1))  # the cylinder's box corner
    blank = np.zeros_like(img)
    assert not draw_record(blank, {"frame": 1, "instances": []}).any()


def test_latency_summary_has_percentiles():
    st = LatencyStats()
    st.start()
    for i in range(10):
        st.add("infer", float(i))
        st.frame_done()
    s = st.summary()
    assert s["frames"] == 10 and s["latency_ms"]["infer"]["p50"] == pytest.approx(4.5)
    assert "infer" in format_summary(s)


def test_drift_monitor_rises_on_shifted_features_and_alarms_once():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 16))
    assert median_bandwidth(ref) > 0
    assert abs(mmd2_rbf(rng.normal(size=(40, 16)), ref, median_bandwidth(ref))) < 0.05
    mon = DriftMonitor(ref, window=16, every=4, threshold=0.2)
    recs = [mon.update(rng.normal(size=16), i) for i in range(16)]
    recs += [mon.update(rng.normal(size=16) + 3.0, 16 + i) for i in range(32)]
    recs = [r for r in recs if r]
    assert recs[0]["drift/mmd2"] < 0.2 < recs[-1]["drift/mmd2"]
    assert recs[-1]["drift/mean_dist"] > 1.0
    assert sum(r["drift/new_alarm"] for r in recs) == 1 and mon.summary()["alarms"] == 1
