"""Draw a frame's instances (class + score, box, 3D-box corners, centre; one colour per class; for an
instance with a 6D pose its 3D box projected from the pose and its object axes) and the FPS/latency
line on a frame."""

from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from sim2real.geometry.camera import Camera
from sim2real.geometry.pose import project
from sim2real.geometry.symmetry import box_corners

# Edges of the 3D box through the 8 corners in the contract's corner order:
# bottom face 0-1-2-3, top face 4-5-6-7, verticals i <-> i+4.
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))

# One BGR colour per class index (distinct hues, bright enough for the white label text's background).
CLASS_COLORS = ((0, 200, 255), (255, 160, 0), (80, 220, 80), (220, 80, 220), (0, 80, 255),
                (255, 255, 0), (160, 100, 255), (0, 255, 200), (120, 180, 255), (200, 200, 200))
TEXT_COLOR = (255, 255, 255)


def to_bgr(image: np.ndarray, is_rgb: bool) -> np.ndarray:
    """A drawable BGR copy of a frame (gray and RGB frames converted)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if is_rgb:
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return image.copy()


def _scale(img: np.ndarray) -> tuple[float, int]:
    s = max(img.shape[:2]) / 640.0
    return max(0.35, 0.5 * s), max(1, int(round(1.5 * s)))


def _label(img: np.ndarray, text: str, org: tuple[int, int], font_scale: float, thick: int,
           bg: tuple[int, int, int]) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    x, y = org
    y = max(th + base, y)
    cv2.rectangle(img, (x, y - th - base), (x + tw + 2, y + 2), bg, -1)
    cv2.putText(img, text, (x + 1, y - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, TEXT_COLOR, thick,
                cv2.LINE_AA)


def class_color(class_id: int) -> tuple[int, int, int]:
    """The BGR colour of a class (one per class index; the palette repeats after 10 classes)."""
    return CLASS_COLORS[int(class_id) % len(CLASS_COLORS)]


def _darker(color: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(c * 0.6) for c in color)


def draw_instance(img: np.ndarray, inst: dict, kp_threshold: float = 0.5,
                  color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Draw one instance of a record (``{"class", "class_id", "score", "box", "center",
    "keypoints"}``, original pixels) onto ``img`` in place: box with a ``class score`` label, the
    3D-box corners and edges, the centre; all in the class's colour unless ``color`` is given."""
    fs, th = _scale(img)
    color = class_color(inst.get("class_id", 0)) if color is None else color
    kps = np.asarray(inst.get("keypoints") or np.zeros((0, 3)), dtype=np.float64).reshape(-1, 3)
    if len(kps) == 8:
        for a, b in BOX_EDGES:
            pa, pb = kps[a], kps[b]
            if min(pa[2], pb[2]) >= kp_threshold and np.isfinite(pa[:2]).all() and np.isfinite(pb[:2]).all():
                cv2.line(img, (int(round(pa[0])), int(round(pa[1]))), (int(round(pb[0])), int(round(pb[1]))),
                         color, max(1, th - 1), cv2.LINE_AA)
    for u, v, s in kps:
        if not (np.isfinite(u) and np.isfinite(v)):
            continue
        # Filled = confident, hollow = low score: keeps uncertain corners visible but distinct.
        cv2.circle(img, (int(round(u)), int(round(v))), 2 + th, color, -1 if s >= kp_threshold else th,
                   cv2.LINE_AA)
    box = inst.get("box")
    if box is not None and np.isfinite(np.asarray(box, np.float64)).all():
        x0, y0, x1, y1 = (int(round(c)) for c in box)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, th + 1)
        _label(img, f"{inst.get('class', '?')} {inst.get('score') or 0.0:.2f}", (x0, y0 - 2), fs, th, _darker(color))
    center = inst.get("center")
    if center is not None and np.isfinite(np.asarray(center, np.float64)).all():
        cv2.drawMarker(img, (int(round(center[0])), int(round(center[1]))), color, cv2.MARKER_CROSS,
                       10 + 4 * th, th + 1, cv2.LINE_AA)
    return img


AXIS_COLORS = ((0, 0, 255), (0, 255, 0), (255, 0, 0))   # BGR: x red, y green, z blue
_EDGE_INDEX = np.array(BOX_EDGES)


def draw_pose(img: np.ndarray, inst: dict, size, camera: Camera,
              color: tuple[int, int, int] | None = None) -> bool:
    """Draw an instance's 6D pose (``inst["pose"]`` = ``{"R", "t"}``): the 12 edges of its 3D box
    (``box_corners(size)``) projected with R, t and the frame's ``camera`` (K + distortion), and its
    object axes (x red, y green, z blue; half the box's largest side long). False when nothing was
    drawn (no pose, no size, a point behind the camera)."""
    pose = inst.get("pose")
    if not pose or size is None:
        return False
    size = np.asarray(size, np.float64).reshape(-1)
    if size.shape != (3,) or not np.all(size > 0):
        return False
    R, t = np.asarray(pose["R"], np.float64), np.asarray(pose["t"], np.float64)
    if R.shape != (3, 3) or t.shape != (3,) or not (np.isfinite(R).all() and np.isfinite(t).all()):
        return False
    half = float(size.max()) / 2
    pts = np.vstack([box_corners(size), np.zeros((1, 3)), np.eye(3) * half])     # 8 corners, origin, axis tips
    if np.any((pts @ R.T + t)[:, 2] <= 1e-6):
        return False                      # a point at or behind the camera plane: no sensible projection
    dist = camera.dist if camera.dist is not None and np.size(camera.dist) else None
    uv = project(pts, R, t, camera.K, dist)
    if not np.isfinite(uv).all() or np.abs(uv).max() > 1e5:
        return False
    p = np.round(uv).astype(np.int32)
    fs, th = _scale(img)
    color = class_color(inst.get("class_id", 0)) if color is None else color
    cv2.polylines(img, list(p[_EDGE_INDEX]), False, _darker(color), th, cv2.LINE_8)   # 12 edges, one call
    for k in range(3):
        cv2.line(img, (int(p[8, 0]), int(p[8, 1])), (int(p[9 + k, 0]), int(p[9 + k, 1])), AXIS_COLORS[k], th + 1,
                 cv2.LINE_AA)
    return True


def draw_record(img: np.ndarray, rec: dict, kp_threshold: float = 0.5, camera: Camera | None = None,
                sizes: Mapping[str, dict] | None = None) -> np.ndarray:
    """Draw every instance of a frame's record (``{"instances": [...]}``, as in the predict / live
    JSONL) onto ``img`` in place, lowest score first so the best ones end on top. With the frame's
    ``camera`` and the classes' ``sizes`` (``objects``: ``{cls: {"size_m": [sx, sy, sz]}}``) an instance
    with a pose also gets its projected 3D box and axes (:func:`draw_pose`)."""
    for inst in sorted(rec.get("instances", []), key=lambda d: d.get("score") or 0.0):
        draw_instance(img, inst, kp_threshold)
        if camera is not None and sizes and inst.get("pose"):
            draw_pose(img, inst, (sizes.get(inst.get("class")) or {}).get("size_m"), camera)
    return img


def draw_status(img: np.ndarray, fps: float, latency_ms: dict[str, float], dropped: int = 0,
                extra: str = "") -> np.ndarray:
    """The top-left status line: FPS, per-stage latency of the current frame, dropped frames."""
    fs, th = _scale(img)
    parts = [f"FPS {fps:5.1f}"] + [f"{k} {v:5.1f}ms" for k, v in latency_ms.items()]
    if dropped:
        parts.append(f"dropped {dropped}")
    if extra:
        parts.append(extra)
    _label(img, " | ".join(parts), (4, 4), fs, th, (40, 40, 40))
    return img
