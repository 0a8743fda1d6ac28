"""``samples.png``: a grid of dataset frames with boxes, 3D-box keypoints and class names drawn on.

For a quick look by eye that labels sit on the objects (box = visible mask extent, keypoints =
projected 3D-box corners; filled dot = visible, ring = occluded, none = outside the image).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sim2real.data.coco_writer import SKELETON
from sim2real.io import atomic_path

_PALETTE = [(66, 135, 245), (245, 130, 48), (60, 180, 75), (230, 25, 75), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]  # BGR


def _color(category_id: int) -> tuple[int, int, int]:
    return _PALETTE[(category_id - 1) % len(_PALETTE)]


def _read_bgr(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, int(img.max())))
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


def draw_frame(img: np.ndarray, anns: list[dict], names: dict[int, str], scale: float) -> np.ndarray:
    """Upscale ``img`` by ``scale`` and draw its annotations (thin lines stay readable on tiny images)."""
    h, w = img.shape[:2]
    out = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_NEAREST)
    # Targets last, so they sit on top of distractors.
    for a in sorted(anns, key=lambda a: (bool(a.get("is_target")), a.get("area", 0))):
        color = _color(a["category_id"])
        thick = 2 if a.get("is_target") else 1
        x, y, bw, bh = a["bbox"]
        p0 = (round(x * scale), round(y * scale))
        p1 = (round((x + bw) * scale) - 1, round((y + bh) * scale) - 1)
        cv2.rectangle(out, p0, p1, color, thick, cv2.LINE_AA)
        kps = np.asarray(a.get("keypoints") or [], dtype=np.float64).reshape(-1, 3)
        pts = [(round(u * scale), round(v * scale)) for u, v, _ in kps]
        for i, j in SKELETON if len(kps) == 8 else []:
            if kps[i - 1, 2] > 0 and kps[j - 1, 2] > 0:
                cv2.line(out, pts[i - 1], pts[j - 1], color, 1, cv2.LINE_AA)
        for (u, v), vis in zip(pts, kps[:, 2]):
            if vis >= 2:
                cv2.circle(out, (u, v), 3, (255, 255, 255), -1, cv2.LINE_AA)
                cv2.circle(out, (u, v), 3, color, 1, cv2.LINE_AA)
            elif vis >= 1:
                cv2.circle(out, (u, v), 3, color, 1, cv2.LINE_AA)
        label = names.get(a["category_id"], str(a["category_id"])) + ("*" if a.get("is_target") else "")
        org = (p0[0], max(10, p0[1] - 3))
        cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def draw_grid(root: str | Path, coco: dict, out_path: str | Path, num: int = 16, cols: int = 4,
              cell_width: int = 256) -> Path | None:
    """Draw the first ``num`` images of ``coco`` (paths relative to ``root``) into one PNG grid."""
    root = Path(root)
    images = coco["images"][:num]
    if not images:
        return None
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cells = []
    for im in images:
        img = _read_bgr(root / im["file_name"])
        cell = draw_frame(img, by_image.get(im["id"], []), names, cell_width / img.shape[1])
        cv2.putText(cell, f"#{im['frame']}", (3, cell.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(cell)
    cols = max(1, min(cols, len(cells)))
    rows = -(-len(cells) // cols)
    ch = max(c.shape[0] for c in cells)
    pad = 2
    sheet = np.full((rows * (ch + pad) + pad, cols * (cell_width + pad) + pad, 3), 40, np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, cols)
        y, x = pad + r * (ch + pad), pad + c * (cell_width + pad)
        sheet[y:y + cell.shape[0], x:x + cell.shape[1]] = cell[:, :cell_width]
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        if not cv2.imwrite(str(tmp), sheet):
            raise OSError(f"cv2 could not write {out_path}")
    return out_path
