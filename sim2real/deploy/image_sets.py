"""Small image sets for deployment-time jobs: drift reference, int8 calibration, fp32-vs-int8 checks.

A set is a folder of images, a video file (frames evenly spread over it), a dataset folder (with
``annotations.json``) or a COCO ``.json``
(``image_root``: the folder its ``file_name`` entries are relative to).  COCO sets also give
labels: every instance of the model's classes as padded arrays (``CocoDataset.original_targets``,
ORIGINAL pixels; docs/contracts.md "Instances").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sim2real.data.images import ImageReadError, load_image
from sim2real.data.real_footage import VIDEO_SUFFIXES

log = logging.getLogger(__name__)



@dataclass
class ImageSet:
    paths: list[Path]
    images: list[np.ndarray]
    # COCO sets: padded instances {"label": (N, M) (-1 = empty), "center": (N, M, 2), "box": (N, M, 4),
    # "keypoints": (N, M, K, 2), "kp_vis": (N, M, K), "ignore": (N, M)}; None for a folder of images
    labels: dict[str, np.ndarray] | None
    skipped: list[str] = field(default_factory=list)   # "<file>: <reason>" of unreadable images left out


def _evenly(n: int, k: int | None) -> np.ndarray:
    if not k or k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def load_image_set(spec: str | Path, image_root: str | Path | None = None, max_images: int | None = None,
                   classes: Sequence[str] | None = None) -> ImageSet:
    """Load up to ``max_images`` images (evenly spread over the set, deterministic)."""
    from sim2real.data.dataset import ANNOTATIONS, CocoDataset
    from sim2real.data.real import list_images

    p = Path(spec).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"image set {p} does not exist (expected a folder of images, a dataset "
                                f"folder with {ANNOTATIONS} or a COCO .json file)")
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        return _video_set(p, max_images)
    if p.is_file() or (p / ANNOTATIONS).is_file():
        ds = CocoDataset(p, image_root=image_root, classes=classes)
        idx = _evenly(len(ds), max_images)
        if not len(idx):
            raise ValueError(f"COCO set {p} has no images (classes {list(classes or [])})")
        paths = [ds.image_path(int(i)) for i in idx]
        labels = dict(ds.original_targets(idx))
    else:
        files = list_images(p)
        if not files:
            raise ValueError(f"folder {p} holds no image files")
        paths = [files[int(i)] for i in _evenly(len(files), max_images)]
        labels = None
    keep, images, skipped = [], [], []
    for j, q in enumerate(paths):  # an unreadable image is left out and counted, not fatal
        try:
            images.append(load_image(q))
            keep.append(j)
        except ImageReadError as e:
            skipped.append(f"{q}: {e.reason}")
    if skipped:
        log.warning("image set %s: %d unreadable image(s) skipped, e.g. %s", p, len(skipped), skipped[0])
    if not images:
        raise ValueError(f"image set {p}: none of its {len(paths)} image(s) is readable (e.g. {skipped[0]})")
    if labels is not None:
        labels = {k: v[keep] for k, v in labels.items()}
    return ImageSet([paths[j] for j in keep], images, labels, skipped)


def _video_set(path: Path, max_images: int | None) -> ImageSet:
    """Up to ``max_images`` frames of a video, evenly spread (RGB uint8), decoded in one pass."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"video {path}: cannot open it (unsupported codec or not a video)")
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        want = set(_evenly(n, max_images).tolist()) if n > 0 else None
        images, paths, i = [], [], 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if want is None or i in want:
                images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame)
                paths.append(Path(f"{path}#{i}"))
                if want is None and max_images and len(images) >= max_images:
                    break
            i += 1
    finally:
        cap.release()
    if not images:
        raise ValueError(f"video {path}: no frame could be decoded")
    return ImageSet(paths, images, None)
