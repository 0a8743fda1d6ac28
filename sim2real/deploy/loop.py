"""The live loop: capture -> Preprocess.frame (uint8) -> backend (normalisation + dense maps) ->
numpy decoding -> instance records -> overlay -> outputs, with stats.

Stages overlap (``pipeline: threads``, the default): a capture thread reads/decodes each frame and
resizes it (``backend.prepare``: one cv2 resize, uint8), an inference thread runs the backend, and
the calling thread decodes the instances, draws and writes; bounded queues between them (a full
queue makes the stage before it wait, so memory stays flat).  ``pipeline: serial`` runs the same
stages one after the other on one thread (the reference ``bench/bench_live.py`` compares against).
``threads: 0`` gives inference ``pipeline_threads()`` intra-op threads (every core up to 3 cores,
else all but one: see :func:`sim2real.deploy.backends.pipeline_threads`).  The ``total`` latency of a
frame runs from its read to its outputs written.

Each frame's JSONL record is ``{"frame", "timestamp", ["media_time_s"], "instances": [...]}``: the
``predict`` record (:func:`sim2real.eval.records.prediction_record`) of every instance scoring at
least ``score_thresh`` (config; default the model's ``head.score_thresh``, from the checkpoint or
the ONNX/TorchScript metadata), in ORIGINAL pixels, each with its 6D pose (``pose``, ``center_3d``,
``reproj_px``, ``pose_status``; config ``pose``, ``camera_file``, ``max_reproj_px``): PnP on the
reported instances' corners, with the ``camera_file`` or the model's training camera resampled to the
frame's size. Instances with a pose are drawn with their projected 3D box and object axes.

Frame delivery (``drop``): ``latest`` keeps only the newest frame (cameras and streams: a slow
model skips stale frames instead of lagging ever further behind); ``all`` processes every frame
(files and folders: the annotated video has exactly the input's frames).  ``auto`` picks
``latest`` for live sources and ``all`` for files/folders.

Whatever ends the loop — end of file, a stream that stays down after its retries,
``max_frames``, Ctrl-C / SIGTERM, ``q`` in the window, or an output that cannot be written (disk
full, read-only) — the video is released and moved into place, the JSONL closed and the stats JSON
written (``finally``), so every output is complete.  A lost stream is a failure, not an end: the
stats say ``"stream_lost": true`` and ``sim2real live`` exits 1 naming the stream.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from sim2real.config import to_dict
from sim2real.data.images import normalize_image
from sim2real.deploy.backends import InferenceBackend, TorchBackend, load_backend, pipeline_threads
from sim2real.deploy.capture import Backoff, CaptureThread
from sim2real.deploy.config import LiveConfig
from sim2real.deploy.drift import DriftMonitor
from sim2real.deploy.latency import LatencyStats, format_summary
from sim2real.deploy.overlay import draw_record, draw_status, to_bgr
from sim2real.deploy.predictions import to_records
from sim2real.eval.records import PoseSetup
from sim2real.deploy.sources import open_source, parse_source, source_fps
from sim2real.deploy.video_writer import VideoOutput
from sim2real.io import JsonlWriter, OutputError, atomic_write_json
from sim2real.runinfo import seed_everything, write_run_info

WINDOW = "sim2real live"


class DisplayUnavailable(ValueError):
    """``--display`` on an OpenCV build without GUI support."""


def check_display() -> None:
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise DisplayUnavailable(
            "--display needs an OpenCV build with GUI support, but this environment has "
            "opencv-python-headless (GUI: NONE), shipped on purpose because albumentations needs it. "
            "Use --output annotated.mp4 (and --jsonl preds.jsonl) to run headless, or install a GUI "
            "OpenCV build (pip install opencv-python) in a separate environment for viewing.") from None


class _StopSignal:
    """First Ctrl-C/SIGTERM asks the loop to stop after the current frame; a second one aborts."""

    def __init__(self, log: Callable[[str], None]):
        self.reason: str | None = None
        self.log = log
        self._prev: dict[int, Any] = {}

    def __call__(self, signum, _frame) -> None:
        if self.reason is not None:
            raise KeyboardInterrupt
        self.reason = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"signal {signal.Signals(signum).name}"
        self.log(f"[live] {self.reason}: finishing the current frame and closing outputs "
                 "(press Ctrl-C again to abort)")

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled on the main thread (e.g. the loop run from a test thread)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._prev[sig] = signal.signal(sig, self)

    def restore(self) -> None:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev)
        self._prev.clear()


def default_run_dir() -> Path:
    return Path("runs/live") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def embed_images(backend: InferenceBackend, images: list[np.ndarray]) -> np.ndarray:
    rows = []
    for img in images:
        x, _ = backend.prepare(img)
        out = backend(x[None])
        if "embed" not in out:
            raise ValueError(f"{backend.source}: the model has no 'embed' output, needed by the drift monitor")
        rows.append(out["embed"][0])
    return np.stack(rows)


def _drift_monitor(cfg: LiveConfig, backend: InferenceBackend, log) -> DriftMonitor | None:
    if not cfg.drift.reference:
        return None
    from sim2real.deploy.image_sets import load_image_set

    t0 = time.perf_counter()
    ref = load_image_set(cfg.drift.reference, cfg.drift.image_root, cfg.drift.max_reference, backend.classes)
    emb = embed_images(backend, ref.images)
    log(f"[live] drift reference: {len(ref.images)} images from {cfg.drift.reference} embedded in "
        f"{time.perf_counter() - t0:.1f} s")
    return DriftMonitor(emb, window=cfg.drift.window, every=cfg.drift.every, threshold=cfg.drift.threshold,
                        metric=cfg.drift.metric)


def run_live(cfg: LiveConfig, backend: InferenceBackend | None = None, opener: Callable[[], Any] | None = None,
             live: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the loop described by ``cfg``; returns the stats dict (also saved as JSON).

    ``backend`` and ``opener`` (a capture factory; ``live`` says if it is a live stream) replace
    the ones ``cfg`` names (tests, benches).
    """
    seed_everything(cfg.seed)
    spec = parse_source(cfg.source) if opener is None else None
    live_source = spec.is_live if spec is not None else live
    if backend is None:
        # Idle intra-op threads busy-wait by default; in the overlapped loop that spinning would take
        # the cores the capture and drawing stages need between two inferences.
        backend = load_backend(cfg.checkpoint, cfg.backend, cfg.threads or pipeline_threads(),
                               spin=cfg.pipeline == "serial")
    if cfg.tta.enabled and not isinstance(backend, TorchBackend):
        raise ValueError(f"--tta-bn needs the torch backend (BatchNorm is folded into the {backend.name} graph); "
                         f"pass the training checkpoint .pt instead of {backend.source}")
    if cfg.display:
        check_display()
    if cfg.frame_interpolation:
        backend.preprocess.frame_interpolation = cfg.frame_interpolation
    pose = None
    if cfg.pose:
        # A bad camera file fails here, before any output is created (one-line error, exit 2).
        pose = PoseSetup.build(backend.objects, backend.camera, cfg.camera_file, cfg.max_reproj_px)
        import warnings

        for line in pose.problems(backend.classes):
            warnings.warn(line, stacklevel=2)
    score_thresh = backend.score_thresh if cfg.score_thresh is None else float(cfg.score_thresh)
    drop = {"latest": True, "all": False}.get(cfg.drop, live_source)
    if cfg.pipeline == "serial":
        drop = False  # one thread reads a frame only when it is ready for it: nothing to drop
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir()
    stats_path = Path(cfg.stats) if cfg.stats else run_dir / "stats.json"
    drift = _drift_monitor(cfg, backend, log)
    adapter = None
    if cfg.tta.enabled:
        from sim2real.deploy.tta import BatchNormAdapter

        adapter = BatchNormAdapter(backend.model, cfg.tta.momentum, cfg.tta.every, cfg.tta.buffer,
                                   forward=backend.forward_tensor)

    if opener is None:
        def opener():
            return open_source(spec, cfg.folder_fps, cfg.retry.stream_timeout_s, log=log)
    backoff = Backoff(cfg.retry.max_retries, cfg.retry.base_s, cfg.retry.factor, cfg.retry.max_s)
    name = spec.text if spec is not None else "source"
    # Open once here so an unopenable source fails before any output is created; the capture
    # thread reuses this capture and calls ``opener`` again only to reconnect.
    first = opener()
    fps_in = source_fps(first, cfg.folder_fps)
    opened = [first]

    def reuse_then_open():
        return opened.pop() if opened else opener()

    def prepare(frame):
        im = frame.image
        if not frame.is_rgb and (im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3):
            # 16-bit or 1-channel (mono camera) frames: the same conversion training images get.
            frame.image, frame.is_rgb = normalize_image(im), True
        return backend.prepare(frame.image, color="rgb" if frame.is_rgb else "bgr")

    pace = fps_in if (cfg.realtime and drop and not live_source) else None
    serial = cfg.pipeline == "serial"
    # Preprocessing runs on the capture thread: it overlaps with inference on the previous frame.
    capture = CaptureThread(reuse_then_open, live=live_source, drop=drop, backoff=backoff,
                            pace_fps=pace, fps=fps_in, name=name, log=log, transform=prepare,
                            queue_size=1)  # one frame ahead is all the overlap needs; more only adds latency
    try:
        write_run_info(run_dir, cfg, seed=cfg.seed, backend=backend.info())
        from sim2real.tracking import make_logger

        logger = make_logger(run_dir, cfg.tracking, to_dict(cfg))
    except BaseException:
        first.release()
        raise
    video = jsonl_fh = None
    stop = _StopSignal(log)
    stats = LatencyStats()
    stopped_by = None
    records = instances = 0
    video_path = None
    infer_stage = frames = None
    log(f"[live] {backend.name} backend, model {backend.source or '<in memory>'}, input {backend.input_hw}, "
        f"source {name} ({'live' if live_source else 'file'}, {'latest-frame' if drop else 'every frame'}), "
        f"{'serial' if serial else 'overlapped'} stages, score threshold {score_thresh:g}")

    def infer(frame) -> dict:
        batch = frame.prepared[0][None]
        if adapter is not None:
            import torch

            t0 = time.perf_counter()
            adapter.observe(torch.from_numpy(batch))
            stats.add("adapt", (time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        out = backend(batch)
        stats.add("infer", (time.perf_counter() - t0) * 1e3)
        return out

    try:
        if cfg.output:
            video = VideoOutput(cfg.output, cfg.output_fps or fps_in, log=log)
        if cfg.jsonl:
            jsonl_fh = JsonlWriter(cfg.jsonl, "--jsonl")
        # The overlay (boxes, 3D boxes, status line) is drawn only for a viewer: headless, the JSONL
        # records are the output and ~3 ms per frame of drawing 20 instances is saved.
        shows = bool(cfg.display or video is not None)
        stop.install()
        if serial:
            frames = _serial_results(capture, infer, stop)
        else:
            infer_stage = InferStage(capture, infer, stop).start()
            frames = infer_stage.results()
        stats.start()
        while stop.reason is None:
            t_wait = time.perf_counter()
            item = next(frames, None)
            stats.add("wait", (time.perf_counter() - t_wait) * 1e3)
            if item is None:
                break
            frame, out = item
            _, meta = frame.prepared
            stats.add("preprocess", frame.prepare_ms)
            t_post = time.perf_counter()
            where = {"frame": frame.index, "timestamp": round(frame.wall_time, 6),
                     **({"media_time_s": round(frame.media_time_s, 6)} if frame.media_time_s is not None else {})}
            rec = to_records(out, [meta], backend.classes, score_thresh, **backend.decode_options, where=[where],
                             pose=pose)[0]
            instances += len(rec["instances"])
            if drift is not None and "embed" in out:
                d = drift.update(out["embed"][0], frame.index)
                if d is not None:
                    logger.log({k: v for k, v in d.items() if k != "frame"}, step=frame.index)
                    if d["drift/new_alarm"]:
                        log(f"[live] WARNING: feature drift {cfg.drift.metric} = {d['drift/' + cfg.drift.metric]:.4f} "
                            f"rose past --drift-threshold {cfg.drift.threshold} at frame {frame.index}: the "
                            "camera's images no longer look like the reference set (lighting, focus, scene?)")
            stats.add("records", (time.perf_counter() - t_post) * 1e3)
            if shows:  # no --display, no --output: nobody sees the image, drawing would only cost time
                with stats.stage("draw"):
                    img = to_bgr(frame.image, frame.is_rgb)
                    draw_record(img, rec, cfg.kp_threshold,
                                camera=pose.camera_for(img.shape[1], img.shape[0]) if pose is not None else None,
                                sizes=pose.objects if pose is not None else None)
                    if cfg.overlay:
                        draw_status(img, stats.recent_fps(),
                                    {"pre": stats.last("preprocess"), "infer": stats.last("infer")},
                                    capture.stats.dropped)
            with stats.stage("write"):
                if video is not None:
                    video.write(img)
                if jsonl_fh is not None:
                    jsonl_fh.write(rec)
                    records += 1
                if cfg.display:
                    cv2.imshow(WINDOW, img)
                    if (cv2.waitKey(1) & 0xFF) in (27, ord("q")):
                        stopped_by = "quit key"
            stats.add("total", (time.perf_counter() - frame.t_read) * 1e3)
            stats.frame_done()
            if stopped_by:
                break
            if cfg.max_frames and stats.frames >= cfg.max_frames:
                stopped_by = "max_frames"
                break
    except BaseException as e:  # finalize every output below, then re-raise
        failure = e
        if isinstance(e, OutputError):
            stopped_by = f"output error: {e.strerror}"
    else:
        failure = None
    if infer_stage is not None:
        infer_stage.stop()
    elif frames is not None:
        frames.close()  # the serial reader releases its capture
    stop.restore()
    capture.stop()
    for cap in opened:  # never handed to the thread (an error before start)
        cap.release()
    # Each output is finalized on its own: one that cannot be written (disk full) never keeps the
    # others from being closed, and the first error is the one reported.
    errors: list[BaseException] = [failure] if failure is not None else []

    def finalize(step, *args):
        try:
            return step(*args)
        except Exception as e:  # noqa: BLE001 - collected, the first is raised below
            errors.append(e)
            return None

    if video is not None:
        video_path = finalize(video.close)
    if jsonl_fh is not None:
        jsonl_fh.close()
    if cfg.display:
        finalize(cv2.destroyAllWindows)
    stopped_by = stopped_by or stop.reason or capture.stats.end_reason or "stopped"
    summary = _summary(cfg, backend, name, live_source, drop, stats, capture, stopped_by, video, video_path,
                       records, drift, adapter)
    summary["detections"] = {"score_thresh": score_thresh, "instances": instances,
                             "per_frame_mean": round(instances / stats.frames, 4) if stats.frames else 0.0}
    finalize(lambda: atomic_write_json(stats_path, summary, indent=2))
    finalize(lambda: logger.summary({f"live/{k}": v for k, v in _flat_summary(summary).items()}))
    finalize(logger.close)
    if errors:
        raise errors[0]
    if capture.error is not None:
        raise capture.error
    if infer_stage is not None and infer_stage.error is not None:
        raise infer_stage.error
    log(format_summary(summary))
    log(f"[live] stopped: {stopped_by}; {stats.frames} frames processed, {capture.stats.dropped} dropped, "
        f"{capture.stats.retries} retries; stats -> {stats_path}"
        + (f"; video -> {video_path}" if video_path else "") + (f"; predictions -> {cfg.jsonl}" if cfg.jsonl else ""))
    summary["stats_path"] = str(stats_path)
    return summary


_END = object()


class InferStage:
    """The inference thread of the overlapped loop: takes prepared frames from the capture thread
    (the latest one, or every one, as the capture delivers them), runs ``infer`` and hands
    ``(frame, outputs)`` to the consumer through a bounded queue (``results()``).  A full queue
    makes it wait, so with latest-frame delivery a slow consumer leads to dropped frames at the
    capture, never to a growing backlog."""

    def __init__(self, capture: CaptureThread, infer: Callable[[Any], dict], stop: _StopSignal, queue_size: int = 1):
        self.capture, self.infer, self.stop_signal = capture, infer, stop
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> InferStage:
        self.capture.start()
        self._thread = threading.Thread(target=self._run, name="live:infer", daemon=True)
        self._thread.start()
        return self

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    frame = self.capture.get(timeout=0.25)
                except TimeoutError:
                    continue
                if frame is None:
                    break
                if not self._put((frame, self.infer(frame))):
                    return
        except BaseException as e:  # noqa: BLE001 - surfaced by run_live after the outputs are closed
            self.error = e
        finally:
            self._put(_END)

    def results(self):
        """``(frame, outputs)`` in order until the source ends, the thread fails or the loop stops."""
        while self.stop_signal.reason is None:
            try:
                item = self.queue.get(timeout=0.25)
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive() and self.queue.empty():
                    return
                continue
            if item is _END:
                return
            yield item

    def stop(self) -> None:
        self._stop.set()
        self.capture.stop()
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not None:
            self._thread.join(5.0)


def _serial_results(capture: CaptureThread, infer, stop: _StopSignal):
    """The single-thread loop: read + prepare, infer, then the caller's decoding/drawing, in turn."""
    frames = capture.read_inline()
    try:
        for frame in frames:
            yield frame, infer(frame)
            if stop.reason is not None:
                return
    finally:
        frames.close()


def _summary(cfg, backend, name, live_source, drop, stats, capture, stopped_by, video, video_path, records,
             drift, adapter) -> dict:
    s = stats.summary()
    s.update({
        "source": name, "live_source": live_source, "delivery": "latest" if drop else "all",
        "pipeline": cfg.pipeline,
        "stopped_by": stopped_by, "backend": backend.info(),
        # A live stream that stayed down after its retries: the run failed (``sim2real live`` exits 1).
        "stream_lost": bool(capture.stats.stream_lost and stopped_by == capture.stats.end_reason),
        "capture": {"frames_read": capture.stats.frames_read, "dropped": capture.stats.dropped,
                    "retries": capture.stats.retries, "reconnects": capture.stats.reconnects,
                    "end_reason": capture.stats.end_reason, "events": capture.stats.events[-20:]},
        "outputs": {"video": str(video_path) if video_path else None, "video_frames": video.frames if video else 0,
                    "video_codec": video.fourcc if video else None,
                    "jsonl": cfg.jsonl, "jsonl_records": records},
    })
    if drift is not None:
        s["drift"] = drift.summary()
    if adapter is not None:
        s["tta"] = {"bn_updates": adapter.updates, "momentum": adapter.momentum, "bn_layers": len(adapter.layers)}
    return s


def _flat_summary(summary: dict) -> dict:
    """Scalars of the stats for the run logger (W&B summary)."""
    out = {"frames": summary["frames"], "fps": summary["fps"], "dropped": summary["capture"]["dropped"],
           "retries": summary["capture"]["retries"]}
    if "detections" in summary:
        out["instances_per_frame"] = summary["detections"]["per_frame_mean"]
    for stage, v in summary["latency_ms"].items():
        for q in ("p50", "p95", "p99"):
            out[f"latency_ms/{stage}/{q}"] = v[q]
    if "drift" in summary and summary["drift"].get("checks"):
        out.update({f"drift/last/{k.split('/')[-1]}": v for k, v in summary["drift"]["last"].items()})
    return out
