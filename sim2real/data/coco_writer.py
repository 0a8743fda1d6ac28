"""One rendered frame -> image/depth/mask files + a label JSON; label JSONs -> COCO ``annotations.json``.

Layout (see docs/contracts.md)::

    images/000123.png|jpg   depth/000123.png (uint16 mm)   masks/000123.png (uint16 instance ids)
    labels/000123.json      written LAST: a frame is committed iff its label file exists

Every file is written atomically (temp file + rename), so a killed process leaves whole files or
none, and the label file is the commit marker.  Frame files are *not* fsync-ed one by one (four
fsyncs cost more than rendering a small frame); instead the label stores the sha256 of the
image/depth/mask bytes, and a resumed run re-reads and checks them (``committed_frames(...,
verify=True)``), so a file torn or emptied by a power cut is found and its frame re-rendered.  The
generator syncs the file system once before it writes ``annotations.json``.
``annotations.json`` is rebuilt from the label files, sorted by frame, so its bytes depend only
on which frames exist — not on worker count, shard layout or the order frames finished in.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from sim2real.io import OutputError, atomic_write_json

FRAME_DIRS = ("images", "depth", "masks", "labels")
NUM_KEYPOINTS = 8
KEYPOINT_NAMES = [f"corner{i}" for i in range(NUM_KEYPOINTS)]
# 3D-box edges in the contract's corner order (0-3 the z- face, 4-7 the z+ face), 1-based as COCO wants.
SKELETON = [[1, 2], [2, 3], [3, 4], [4, 1], [5, 6], [6, 7], [7, 8], [8, 5],
            [1, 5], [2, 6], [3, 7], [4, 8]]
DEPTH_SCALE_M = 0.001  # one depth-PNG unit in metres
LABEL_VERSION = 2  # 2: frames carry "scene"/"view" (several views per randomized scene)
_UMASK = os.umask(0)
os.umask(_UMASK)


def frame_stem(frame: int) -> str:
    return f"{frame:06d}"


def label_path(out: Path, frame: int) -> Path:
    return Path(out) / "labels" / f"{frame_stem(frame)}.json"


# PNG row filter and deflate strategy by content, measured on default-scene frames
# (docs/benchmarks.md, "Generation"): colour frames with "up" + run-length matching encode in
# ~70 % of OpenCV's default time at the same size; depth (smooth) is smallest and fastest with
# "sub"; instance masks (runs of one id) with no filter.  Older OpenCV builds without these flags
# keep their defaults.
_FILTER = getattr(cv2, "IMWRITE_PNG_FILTER", None)
_PNG_OPTIONS = {"image": ("UP", "RLE"), "depth": ("SUB", None), "mask": ("NONE", None)}


@functools.lru_cache(maxsize=None)
def _png_params(png_compression: int, kind: str) -> list[int]:
    params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    row_filter, strategy = _PNG_OPTIONS[kind]
    if _FILTER is not None and hasattr(cv2, f"IMWRITE_PNG_FILTER_{row_filter}"):
        params += [_FILTER, getattr(cv2, f"IMWRITE_PNG_FILTER_{row_filter}")]
    if strategy is not None:
        params += [cv2.IMWRITE_PNG_STRATEGY, getattr(cv2, f"IMWRITE_PNG_STRATEGY_{strategy}")]
    return params


def encode_image(rgb: np.ndarray, image_format: str, jpeg_quality: int = 95, png_compression: int = 1) -> bytes:
    """RGB uint8 (H, W, 3) or gray (H, W) -> PNG/JPEG bytes; gray-looking RGB is saved 1-channel."""
    img = np.asarray(rgb)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        if np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2]):
            img = img[:, :, 0]  # post-processing made it gray (ToGray): keep one channel, as a gray camera
        else:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if image_format == "png":
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), _png_params(png_compression, "image"))
    else:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError(f"cv2 could not encode a {img.shape} {img.dtype} image as {image_format}")
    return buf.tobytes()


def encode_uint16_png(arr: np.ndarray, png_compression: int = 1, kind: str = "depth") -> bytes:
    """uint16 PNG; ``kind`` ("depth" or "mask") picks the row filter."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr, dtype=np.uint16),
                           _png_params(png_compression, kind))
    if not ok:
        raise ValueError(f"cv2 could not encode a {arr.shape} uint16 PNG")
    return buf.tobytes()


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres (0 = no surface) -> uint16 millimetres; beyond 65.535 m saturates, NaN/inf/negative -> 0."""
    mm = np.multiply(depth_m, np.float32(1.0 / DEPTH_SCALE_M), dtype=np.float32)
    np.nan_to_num(mm, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.rint(mm, out=mm)
    np.clip(mm, 0, np.iinfo(np.uint16).max, out=mm)
    return mm.astype(np.uint16)


def mask_to_uint16(seg: np.ndarray) -> np.ndarray:
    seg = np.asarray(seg)
    if seg.size and (seg.min() < 0 or seg.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"segmentation ids must lie in [0, 65535] for a uint16 mask, got "
                         f"[{seg.min()}, {seg.max()}]")
    return seg.astype(np.uint16)


def rle_of(mask: np.ndarray, instance_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray((mask == instance_id).astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _annotation(obj: dict, mask: np.ndarray) -> dict:
    kps = [[float(u), float(v), int(vis)] for u, v, vis in obj["keypoints"]]
    return {
        "category_id": int(obj["class_id"]) + 1,
        "bbox": [float(x) for x in obj["bbox"]],
        "area": int(obj["area"]),
        "iscrowd": 0,
        "segmentation": rle_of(mask, int(obj["instance_id"])),
        "keypoints": [x for kp in kps for x in kp],
        "num_keypoints": sum(1 for kp in kps if kp[2] > 0),
        "center_px": [float(x) for x in obj["center_px"]],
        "center_depth_m": float(obj["center_depth_m"]),
        "pose_cam_from_obj": obj["pose_cam_from_obj"],
        "visibility": float(obj["visibility"]),
        "instance_id": int(obj["instance_id"]),
        "is_target": bool(obj["is_target"]),
        "size_m": obj.get("size_m"),
        "symmetry": obj.get("symmetry", "none"),
    }


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``sim2real.io.atomic_write_bytes`` without the fsync, and with fewer system calls.

    Same temp-file naming (``.<name>.<unique><ext>``, so ``remove_temp_files`` finds leftovers)
    and the same atomic rename.  The temp name is this process's id and a counter (created with
    O_EXCL, the mode from the umask), which saves mkstemp's random names and the fchmod.
    """
    path = Path(path)
    tmp = None
    try:
        tmp, fd = _open_temp(path)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(e.errno, f"cannot write {path}: {e.strerror}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


_TEMP_COUNTER = itertools.count()
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _open_temp(path: Path) -> tuple[str, int]:
    for attempt in range(3):
        tmp = f"{path.parent}/.{path.name}.{os.getpid()}-{next(_TEMP_COUNTER)}{path.suffix or '.tmp'}"
        try:
            return tmp, os.open(tmp, _CREATE, 0o666)
        except FileNotFoundError:
            if attempt:
                raise
            path.parent.mkdir(parents=True, exist_ok=True)  # first file of its folder
        except FileExistsError:  # left by a killed process that had this pid
            continue
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)
    return tmp, fd


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OutputError as e:
        if e.errno == errno.ENOSPC:
            raise OutputError(e.errno, f"disk full while writing {path}; every frame written so far is "
                                       "complete — free some space and re-run the same command to resume") from None
        raise


def write_frame(out: str | Path, frame: int, frame_seed: int, obs: dict, labels: dict, *,
                image_format: str = "png", jpeg_quality: int = 95, png_compression: int = 1,
                scene: int | None = None, view: int | None = None) -> dict:
    """Write one frame's files, then its label JSON (the commit marker). Returns the label dict.

    ``scene``/``view``: which randomized scene the frame shows and which of its views it is.
    """
    out = Path(out)
    stem = frame_stem(frame)
    rgb, depth, seg = obs["rgb"], obs["depth"], obs["segmentation"]
    mask = mask_to_uint16(seg)
    files = {
        "image": (f"images/{stem}.{image_format}", encode_image(rgb, image_format, jpeg_quality, png_compression)),
        "depth": (f"depth/{stem}.png", encode_uint16_png(depth_to_mm(depth), png_compression)),
        "mask": (f"masks/{stem}.png", encode_uint16_png(mask, png_compression, "mask")),
    }
    for rel, data in files.values():
        _write(out / rel, data)
    cam = labels["camera"]
    label = {
        "label_version": LABEL_VERSION,
        "frame": int(frame),
        "seed": int(frame_seed),
        "scene": None if scene is None else int(scene),
        "view": None if view is None else int(view),
        "file_name": files["image"][0],
        "depth_file": files["depth"][0],
        "mask_file": files["mask"][0],
        "width": int(cam["width"]),
        "height": int(cam["height"]),
        "camera_K": cam["K"],
        "T_world_from_cam": cam["T_world_from_cam"],
        "classes": list(labels["classes"]),
        "objects": [_annotation(o, mask) for o in labels["objects"]],
        # Lets a reader check the files are the ones this label describes.
        "sha256": {key: hashlib.sha256(data).hexdigest() for key, (_, data) in files.items()},
    }
    _write(label_path(out, frame), json.dumps(label, separators=(",", ":")).encode("utf-8"))
    return label


def read_label(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"label file {path} is not valid JSON ({e}); delete it to re-render that frame") from None


def frame_is_intact(out: str | Path, frame: int) -> bool:
    """The frame's label parses, has this label version, and its files hash to what it recorded."""
    out = Path(out)
    try:
        label = json.loads(label_path(out, frame).read_bytes())
        if label.get("label_version") != LABEL_VERSION or label.get("frame") != frame:
            return False
        files = {"image": label["file_name"], "depth": label["depth_file"], "mask": label["mask_file"]}
        for key, rel in files.items():
            if hashlib.sha256((out / rel).read_bytes()).hexdigest() != label["sha256"][key]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def committed_frames(out: str | Path, verify: bool = False, frames: Iterable[int] | None = None) -> set[int]:
    """Frames whose label (commit marker) and data files all exist.

    ``verify``: also re-read every file and check the hashes in its label (``frame_is_intact``);
    ``frames``: only look at these.
    """
    out = Path(out)
    labels_dir = out / "labels"
    if not labels_dir.is_dir():
        return set()
    existing = {d: {p.name for p in (out / d).iterdir() if not p.name.startswith(".")}
                for d in FRAME_DIRS if (out / d).is_dir()}
    done = set()
    for name in existing.get("labels", ()):
        stem, ext = name.rsplit(".", 1) if "." in name else (name, "")
        if ext != "json" or not stem.isdigit():
            continue
        data_ok = (any(f"{stem}.{e}" in existing.get("images", ()) for e in ("png", "jpg"))
                   and f"{stem}.png" in existing.get("depth", ()) and f"{stem}.png" in existing.get("masks", ()))
        if data_ok:
            done.add(int(stem))
    if frames is not None:
        done &= set(frames)
    if verify:
        done = {f for f in done if frame_is_intact(out, f)}
    return done


LOCK_NAME = ".generate.lock"


def remove_temp_files(out: str | Path) -> int:
    """Delete leftovers of interrupted atomic writes (``.<name>.<random><ext>`` files)."""
    out = Path(out)
    removed = 0
    for folder in [out, *(out / d for d in FRAME_DIRS)]:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and p.name.startswith(".") and p.name.count(".") >= 2 and p.name != LOCK_NAME:
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def categories(classes: list[str]) -> list[dict]:
    return [{"id": i + 1, "name": c, "supercategory": "object", "keypoints": KEYPOINT_NAMES, "skeleton": SKELETON}
            for i, c in enumerate(classes)]


def build_coco(labels: Iterable[dict], info: dict | None = None) -> dict:
    """COCO dict from per-frame labels; image id = frame + 1, annotation ids follow frame order."""
    labels = sorted(labels, key=lambda lab: lab["frame"])
    classes = labels[0]["classes"] if labels else []
    images, anns = [], []
    for lab in labels:
        if lab["classes"] != classes:
            raise ValueError(f"frame {lab['frame']} has classes {lab['classes']}, other frames {classes}: "
                             "frames from different scenes cannot share one annotations.json")
        image_id = lab["frame"] + 1
        images.append({"id": image_id, "file_name": lab["file_name"], "width": lab["width"],
                       "height": lab["height"], "frame": lab["frame"], "seed": lab["seed"],
                       "scene": lab.get("scene"), "view": lab.get("view"),
                       "camera_K": lab["camera_K"], "T_world_from_cam": lab["T_world_from_cam"],
                       "depth_file": lab["depth_file"], "mask_file": lab["mask_file"]})
        for obj in lab["objects"]:
            anns.append({"id": len(anns) + 1, "image_id": image_id, **obj})
    return {"info": dict(info or {}), "categories": categories(classes), "images": images, "annotations": anns}


def write_coco(out: str | Path, coco: dict) -> Path:
    return atomic_write_json(Path(out) / "annotations.json", coco)


def load_labels(out: str | Path, frames: Iterable[int]) -> list[dict]:
    return [read_label(label_path(Path(out), f)) for f in sorted(frames)]


def dataset_counts(coco: dict) -> dict[str, Any]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_class = {n: 0 for n in names.values()}
    targets = 0
    for a in coco["annotations"]:
        per_class[names[a["category_id"]]] += 1
        targets += bool(a.get("is_target"))
    return {"frames": len(coco["images"]), "annotations": len(coco["annotations"]), "targets": targets,
            "per_class": per_class,
            "frames_without_target": len(coco["images"]) - len(
                {a["image_id"] for a in coco["annotations"] if a.get("is_target")})}
