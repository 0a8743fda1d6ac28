"""``sim2real live``: run a checkpoint on a camera, video, stream or folder of frames."""

from __future__ import annotations

import argparse
import sys

from sim2real.commands._common import add_config_arguments, config_from_args, flag_overrides

HELP = "run a checkpoint on a camera, video, stream or folder of frames"
DESCRIPTION = """\
Run a model on live frames. Three overlapped stages (pipeline=threads; pipeline=serial runs them on
one thread): capture + decode + one cv2 resize to the model's uint8 input (the model's own
preprocessing, gray cameras included; frame_interpolation=training gives the training input bit for
bit), inference (the normalisation runs inside the model; --threads default: every core up to 3,
else all but one), and decoding + drawing + writing. Every detected object is drawn on the frame
(class, score, box, 3D-box corners; one colour per class) with an FPS/latency line. Objects are
reported from --score-thresh (default: the model's head.score_thresh, stored in the checkpoint or
the exported file). --jsonl writes one line per frame: {"frame", "timestamp", "media_time_s",
"instances": [{"class", "class_id", "score", "box", "center", "keypoints", "pose", "center_3d",
"reproj_px", "pose_status"}, ...]} in original pixels, the same instance records as `sim2real predict`.
6D pose: PnP on each reported instance's corners against its class's 3D box, with the model's
training camera resampled to the frame's size or --camera calib.yml (OpenCV/ROS YAML, distortion
used); "pose": {"R", "t"} in metres (OpenCV camera frame) or null with "pose_status" saying why;
posed instances are drawn with their projected 3D box and axes. --no-pose skips it. At the end (end of file, stream lost, --max-frames, Ctrl-C) latency p50/p95/p99
per stage (wait, preprocess, infer, records, draw, write, total = read -> written) and FPS are printed
and saved as JSON, and
every output file is finalized (a Ctrl-C still leaves a playable video).

Sources: a camera index (0), a video file, an rtsp/http URL, or a folder of image frames.
Frame delivery: cameras and streams default to latest-frame (--drop): a model slower than the
camera works on the newest frame and stale ones are dropped (counted), so the output never lags
behind. Files and folders default to every frame (--no-drop): the annotated video has exactly
the input's frames. A stream whose read fails is reopened with bounded exponential backoff
(--max-retries); one that stays down is a failure: the outputs are finalized and the command exits 1
with a one-line reason. A file's or folder's end is a normal end (exit 0).

Outputs that cannot be written (read-only folder, disk full) are a one-line error naming the path
(exit 2); what was written before is kept (the video finalized, JSONL lines already flushed).

Display: this package ships opencv-python-headless (no GUI); --display needs a GUI OpenCV build.
Use --output annotated.mp4 and --jsonl preds.jsonl to run headless.

examples:
  sim2real live --checkpoint runs/train/x/best.pt --source 0 --display
  sim2real live --checkpoint model.onnx --source clip.mp4 --output annotated.mp4 --jsonl preds.jsonl
  sim2real live --checkpoint model.onnx --source 0 --camera calib.yml --output out.mp4
  sim2real live --checkpoint best.pt --source rtsp://cam/stream --tta-bn --reference real_frames/ \\
      --drift-threshold 0.1 --output out.mp4
"""

# (flag attribute, config key) pairs whose values are free text: set on the config directly
# (not parsed as overrides) so paths and URLs with any characters survive.
_TEXT_FLAGS = {"checkpoint": "checkpoint", "source": "source", "output": "output", "jsonl": "jsonl",
               "run_dir": "run_dir", "stats": "stats", "reference": "drift.reference",
               "image_root": "drift.image_root", "camera": "camera_file"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "configs/live.yaml")
    p.add_argument("--checkpoint", help="model: checkpoint .pt (torch), exported .onnx (onnxruntime) or TorchScript")
    p.add_argument("--source", help="camera index, video file, rtsp/http URL or folder of frames (default 0)")
    p.add_argument("--backend", choices=["auto", "torch", "torchscript", "onnxruntime"],
                   help="inference backend (default auto: .onnx -> onnxruntime, else torch)")
    p.add_argument("--threads", type=int, help="CPU threads for inference (default: the cores left by the other stages: all up to 3 cores, else all but one)")
    p.add_argument("--display", action="store_true", help="show a window (needs a GUI OpenCV build)")
    p.add_argument("--output", help="write the annotated video here (.mp4; MJPG .avi fallback)")
    p.add_argument("--jsonl", help="write one record per frame here: every instance (original pixels)")
    p.add_argument("--score-thresh", type=float,
                   help="report objects from this score (default: the model's head.score_thresh)")
    p.add_argument("--camera", help="camera calibration YAML (OpenCV/ROS) for the 6D pose "
                                    "(default: the model's training camera)")
    p.add_argument("--max-reproj-px", type=float,
                   help="report a pose only below this mean corner reprojection error (px, default 10)")
    p.add_argument("--no-pose", action="store_true", help="skip the 6D pose (PnP): no pose fields, no 3D box drawn")
    p.add_argument("--run-dir", help="run folder for config, stats and metrics (default runs/live/<time>)")
    p.add_argument("--stats", help="latency/FPS stats JSON (default <run-dir>/stats.json)")
    p.add_argument("--max-frames", type=int, help="stop after this many processed frames")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--drop", action="store_true", help="latest-frame delivery: drop stale frames (live default)")
    g.add_argument("--no-drop", action="store_true", help="process every frame (default for files and folders)")
    p.add_argument("--realtime", action="store_true", help="play a file at its own frame rate (use with --drop)")
    p.add_argument("--max-retries", type=int, help="reconnect attempts for a dropped stream (default 5)")
    p.add_argument("--tta-bn", action="store_true", help="update BatchNorm statistics from recent frames (torch)")
    p.add_argument("--reference", help="reference real images for the drift monitor (folder, dataset or COCO .json)")
    p.add_argument("--image-root", help="folder the --reference COCO file_name entries are relative to")
    p.add_argument("--drift-threshold", type=float, help="warn when the drift metric rises past this")


def run(args: argparse.Namespace) -> int:
    from sim2real.config import ConfigError
    from sim2real.deploy.config import LiveConfig
    from sim2real.deploy.loop import run_live

    extra = flag_overrides(
        args, {"backend": "backend", "threads": "threads", "max_frames": "max_frames", "score_thresh": "score_thresh",
               "max_retries": "retry.max_retries", "drift_threshold": "drift.threshold",
               "max_reproj_px": "max_reproj_px"},
        {"display": "display=true", "drop": "drop=latest", "no_drop": "drop=all", "realtime": "realtime=true",
         "tta_bn": "tta.enabled=true", "no_pose": "pose=false"})
    cfg = config_from_args(LiveConfig, args, extra)
    for attr, key in _TEXT_FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            obj = cfg
            *parents, leaf = key.split(".")
            for part in parents:
                obj = getattr(obj, part)
            setattr(obj, leaf, value)
    if not cfg.checkpoint:
        raise ConfigError("checkpoint", "a model file: --checkpoint model.pt (torch) or model.onnx (onnxruntime)")
    summary = run_live(cfg)
    if summary.get("stream_lost"):
        kept = [f"{summary['frames']} frames processed", f"stats -> {summary.get('stats_path')}"]
        outputs = summary.get("outputs", {})
        if outputs.get("video"):
            kept.append(f"video -> {outputs['video']}")
        if outputs.get("jsonl"):
            kept.append(f"predictions -> {outputs['jsonl']}")
        print(f"sim2real live: error: {summary['stopped_by']}; outputs finalized ({', '.join(kept)})",
              file=sys.stderr)
        return 1
    return 0 if summary.get("frames", 0) > 0 or summary.get("stopped_by", "").startswith("interrupted") else 1
