"""``sim2real predict``: write one JSONL prediction per image/frame in original pixels."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

HELP = "write one JSONL prediction per image/frame in original pixels"
DESCRIPTION = """\
Run a checkpoint (or an exported .onnx / TorchScript file) on a folder of images, the images of a
COCO file / dataset folder, or a video, and write one JSON line per image (batched on the live loop's
fast path: images read and resized to uint8 on a reader thread while the model runs; every image): {"image": file_name | "frame": index, "class", "score",
"box": [x0, y0, x1, y1], "center": [u, v], "keypoints": [[u, v, score], ...]} in ORIGINAL pixels.
A corrupt image gets {"image": ..., "error": "..."} instead, and the run goes on.

6D pose: every reported instance also carries "pose": {"R": 3x3, "t": [x, y, z]} (metres, the centre
of the object's 3D box in the OpenCV camera frame), "center_3d" (= t), "reproj_px" (mean corner
reprojection error, px: the pose's confidence) and "pose_status" ("ok"); without a pose, "pose" is
null and "pose_status" says why (too_few_points, pnp_failed, behind_camera, reprojection: above
--max-reproj-px, no_size: no 3D box size for the class, no_camera). PnP uses the class's box size from
the checkpoint and the training camera resampled to each image's size, or --camera calib.yml
(OpenCV/ROS calibration YAML; its distortion coefficients are used). --no-pose skips PnP (no pose fields).

examples:
  sim2real predict --checkpoint runs/train/sim/best.pt --images data/sim/tabletop
  sim2real predict --checkpoint best.pt --images /usr/share/visp-images-data/ViSP-images/mbt/cube --out cube.jsonl
  sim2real predict --checkpoint best.pt --images clip.mp4 --every 5
  sim2real predict --checkpoint best.pt --images frames/ --camera calib.yml --max-reproj-px 5
"""

from sim2real.data.real_footage import VIDEO_SUFFIXES  # the one list of video suffixes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model checkpoint .pt, exported .onnx or TorchScript file")
    p.add_argument("--images", required=True,
                   help="folder of images, dataset folder with annotations.json, COCO .json file, or video file")
    p.add_argument("--image-root", help="for a COCO file: folder its file_name entries are relative to")
    p.add_argument("--out", help="output .jsonl (default: predictions_<name>.jsonl next to the checkpoint)")
    p.add_argument("--every", type=int, default=1, help="video: every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="video: stop after this many frames")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--score-thresh", type=float, default=None,
                   help="report objects from this score (default: the checkpoint's model.head.score_thresh)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_pose_arguments(p)


def add_pose_arguments(p: argparse.ArgumentParser) -> None:
    """``--camera``, ``--max-reproj-px``, ``--no-pose`` (``predict``; ``live`` maps them onto its config)."""
    from sim2real.eval.pose import DEFAULT_MAX_REPROJ_PX

    p.add_argument("--camera", help="camera calibration YAML (OpenCV/ROS: camera_matrix, distortion_coefficients, "
                                    "image_width/height) for the 6D pose (default: the model's training camera)")
    p.add_argument("--max-reproj-px", type=float, default=None,
                   help=f"report a pose only below this mean corner reprojection error (default {DEFAULT_MAX_REPROJ_PX:g} px)")
    p.add_argument("--no-pose", action="store_true", help="skip the 6D pose (PnP): records without pose fields")


def _folder_images(folder: Path) -> list[tuple[str, Path]]:
    from sim2real.data.images import IMAGE_SUFFIXES

    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return [(f.name, f) for f in files]


def _coco_images(path: Path, image_root: str | None) -> list[tuple[str, Path]]:
    from sim2real.data.dataset import read_coco, resolve_annotation_file
    from sim2real.data.real import coco_from_dict, default_image_root

    ann = resolve_annotation_file(path)
    data = read_coco(ann)
    root = Path(image_root) if image_root else default_image_root(data, ann)
    # The one COCO validator (boxes, ids, file_name inside the root); predictions are not scores, so
    # evaluation-only frames may be predicted on, as with --images <folder>.
    coco = coco_from_dict(data, root, source=ann, check_files=False, allow_protected=True)
    missing = [im.path for im in coco.images if not im.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{ann}: image file {missing[0]} does not exist"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                                + "; pass --image-root if the images live elsewhere")
    return [(im.file_name, im.path) for im in coco.images]


def _video_frames(path: Path, every: int, max_frames: int | None) -> Iterator[tuple[dict, np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"--images {path}: cannot open this video (unsupported codec or not a video)")
    try:
        i = done = 0
        while max_frames is None or done < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield {"frame": i}, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame
                done += 1
            i += 1
    finally:
        cap.release()


def _sources(args) -> tuple[str, Iterator[tuple[dict, np.ndarray | None]], list[dict]]:
    """(name, (where, image) pairs with image None for unreadable files, error records)."""
    from sim2real.data.images import ImageReadError, load_image

    src = Path(args.images)
    errors: list[dict] = []
    if src.is_file() and src.suffix.lower() in VIDEO_SUFFIXES:
        return src.stem, _video_frames(src, max(1, args.every), args.max_frames), errors
    if src.is_dir() and not (src / "annotations.json").is_file():
        files = _folder_images(src)
    elif src.exists():
        files = _coco_images(src, args.image_root)
    else:
        raise FileNotFoundError(f"--images {src} does not exist (expected a folder, COCO .json or video)")

    def gen():
        for name, path in files:
            try:
                yield {"image": name}, load_image(path)
            except ImageReadError as e:
                errors.append({"image": name, "error": str(e)})
    name = src.name if src.is_dir() else src.name.split(".")[0]
    return name, gen(), errors


def _backend(args):
    """The model behind the live loop's fast path: an exported .onnx (onnxruntime) or TorchScript
    file, or a checkpoint (torch eager on --device)."""
    from sim2real.deploy.backends import (
        TorchBackend,
        default_threads,
        guess_backend,
        load_backend,
    )

    if guess_backend(args.checkpoint) == "torch" and not str(args.checkpoint).lower().endswith((".ts", ".torchscript")):
        from sim2real.eval.model import load_model

        model, device, _ = load_model(args.checkpoint, args.device)
        return TorchBackend(model, source=str(args.checkpoint), device=device)
    return load_backend(args.checkpoint, threads=default_threads())


def run(args: argparse.Namespace) -> int:
    import warnings

    from sim2real.deploy.batch_predict import predict_frames
    from sim2real.eval.pose import DEFAULT_MAX_REPROJ_PX
    from sim2real.eval.records import PoseSetup, prediction_record
    from sim2real.io import atomic_path

    model = _backend(args)  # classes, objects, camera, score_thresh as the checkpoint / export metadata say
    pose = None
    if not args.no_pose:
        thr_px = DEFAULT_MAX_REPROJ_PX if args.max_reproj_px is None else args.max_reproj_px
        pose = PoseSetup.build(model.objects, model.camera, args.camera, thr_px)
        for line in pose.problems(model.classes):
            warnings.warn(line, stacklevel=1)
    name, pairs, errors = _sources(args)
    if pose is not None:  # the image size travels with its key: the camera is resampled to it
        pairs = (((where, img.shape[1::-1]), img) for where, img in pairs)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"predictions_{name}.jsonl"
    n = bad = found = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        def write_errors():
            nonlocal bad
            while errors:
                fh.write(json.dumps(errors.pop(0)) + "\n")
                bad += 1

        for where, inst in predict_frames(model, pairs, max(1, args.batch_size), args.score_thresh):
            write_errors()
            if pose is not None:
                where, wh = where
                inst = pose.solve(inst, model.classes, wh)
            fh.write(json.dumps(prediction_record(inst, model.classes, **where)) + "\n")
            n += 1
            found += len(inst["label"])
        write_errors()
    thr = model.score_thresh if args.score_thresh is None else args.score_thresh
    print(f"{out}: {n} images, {found} objects found at score >= {thr:g}"
          + (f", {bad} unreadable image(s) skipped" if bad else ""), file=sys.stdout)
    return 0
