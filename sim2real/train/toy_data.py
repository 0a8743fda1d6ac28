"""A tiny 2-D shapes dataset in the generator's COCO layout (tests, benchmarks, no-PyBullet demos).

Each image is a noise background with one target shape (class = shape type, random colour, size and
place) and optionally one smaller distractor (``is_target`` false).  Keypoints are the 4 box corners
then the 4 edge midpoints, all visible, so every head has something to learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from sim2real.io import atomic_write_json

SHAPES = ("square", "disc", "triangle")


def _draw(kind: str, canvas: np.ndarray, mask: np.ndarray, cx: int, cy: int, r: int, colour) -> None:
    if kind == "square":
        pts = [(cx - r, cy - r), (cx + r, cy + r)]
        cv2.rectangle(canvas, pts[0], pts[1], colour, -1)
        cv2.rectangle(mask, pts[0], pts[1], 1, -1)
    elif kind == "disc":
        cv2.circle(canvas, (cx, cy), r, colour, -1)
        cv2.circle(mask, (cx, cy), r, 1, -1)
    else:
        tri = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(canvas, [tri], colour)
        cv2.fillPoly(mask, [tri], 1)


def _annotation(mask: np.ndarray, ann_id: int, image_id: int, cls: int, target: bool, inst: int) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    w, h = x1 + 1 - x0, y1 + 1 - y0
    corners = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    mids = [(x0 + w / 2, y0), (x0 + w, y0 + h / 2), (x0 + w / 2, y0 + h), (x0, y0 + h / 2)]
    kps = [v for (u, vv) in corners + mids for v in (float(u), float(vv), 2)]
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"id": ann_id, "image_id": image_id, "category_id": cls + 1, "bbox": [x0, y0, w, h],
            "area": int(mask.sum()), "iscrowd": 0, "segmentation": rle, "keypoints": kps, "num_keypoints": 8,
            "center_px": [float(xs.mean()), float(ys.mean())], "center_depth_m": 1.0, "visibility": 1.0,
            "instance_id": inst, "is_target": target}


def write_shapes_dataset(out: str | Path, num_images: int = 24, size: tuple[int, int] = (64, 48),
                         seed: int = 0, distractors: bool = True, gray: bool = False,
                         classes: tuple[str, ...] = SHAPES) -> Path:
    """Write ``<out>/images/*.png`` and ``<out>/annotations.json``; returns ``out``.

    ``size`` is (width, height).  Same arguments -> same bytes.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    W, H = size
    images, anns = [], []
    for i in range(num_images):
        canvas = rng.integers(0, 90, (H, W, 3), dtype=np.uint8)
        # The distractor is drawn first so the target is never occluded (its mask stays exact).
        items = [(int(rng.integers(len(classes))), False)] if distractors else []
        items.append((int(i % len(classes)), True))
        for inst, (cls, target) in enumerate(items, start=1):
            r = int(rng.integers(max(3, min(W, H) // 8), max(4, min(W, H) // 4))) if target else max(2, min(W, H) // 12)
            cx = int(rng.integers(r + 1, W - r - 1))
            cy = int(rng.integers(r + 1, H - r - 1))
            colour = tuple(int(c) for c in rng.integers(130, 256, 3))
            mask = np.zeros((H, W), np.uint8)
            _draw(classes[cls], canvas, mask, cx, cy, r, colour)
            anns.append(_annotation(mask, len(anns) + 1, i + 1, cls, target, inst))
        name = f"images/{i:06d}.png"
        img = cv2.cvtColor(canvas, cv2.COLOR_RGB2GRAY) if gray else canvas[:, :, ::-1]
        cv2.imwrite(str(out / name), img)
        images.append({"id": i + 1, "file_name": name, "width": W, "height": H, "frame": i,
                       "camera_K": [[float(W), 0.0, W / 2.0], [0.0, float(W), H / 2.0], [0.0, 0.0, 1.0]]})
    cats = [{"id": k + 1, "name": c, "supercategory": "object",
             "keypoints": [f"corner{j}" for j in range(8)], "skeleton": []} for k, c in enumerate(classes)]
    atomic_write_json(out / "annotations.json", {"images": images, "annotations": anns, "categories": cats})
    (out / "manifest.json").write_text(json.dumps({"kind": "toy-shapes", "seed": seed, "count": num_images,
                                                    "classes": list(classes)}, indent=2))
    return out
