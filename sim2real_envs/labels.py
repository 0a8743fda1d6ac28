"""Exact per-frame labels from the simulator (format: docs/contracts.md, ``info["labels"]``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from sim2real_envs.camera import project

# Corner signs in the object frame; same order as the real ViSP cube CAD model.
CORNER_SIGNS = np.array([(+1, -1, -1), (-1, -1, -1), (-1, +1, -1), (+1, +1, -1),
                         (+1, -1, +1), (-1, -1, +1), (-1, +1, +1), (+1, +1, +1)], dtype=float)


@dataclass
class LabelledObject:
    instance_id: int
    class_id: int
    class_name: str
    is_target: bool
    T_world_from_obj: np.ndarray  # object frame = centre of its 3D box
    size: np.ndarray              # full box extents (m)
    symmetry: Any = "none"        # a SYMMETRIES name or a list of corner permutations (scene config)


def _round_list(a, nd=6):
    return [round(float(v), nd) for v in np.asarray(a).ravel()]


def _matrix(a, nd=9) -> list[list[float]]:
    return [[round(float(v), nd) for v in row] for row in np.asarray(a)]


def box_corners(size) -> np.ndarray:
    return CORNER_SIGNS * (np.asarray(size, dtype=float) / 2)


_PATCH = np.array([(dv, du) for dv in (-1, 0, 1) for du in (-1, 0, 1)])  # 3x3 neighbourhood


def keypoint_visibility(uv: np.ndarray, z: np.ndarray, depth: np.ndarray, tol: float) -> list[int]:
    """2 = visible (depth test), 1 = in the image but occluded, 0 = outside / behind the camera.

    The depth test takes the farthest surface in the 3x3 pixels around the corner, so a corner
    on a silhouette edge (where rounding may hit the occluding face) still counts as visible.
    """
    h, w = depth.shape
    uv = np.asarray(uv, dtype=float)
    z = np.asarray(z, dtype=float)
    ok = (z > 0) & np.isfinite(uv).all(axis=1)
    iuv = np.zeros((len(uv), 2), dtype=np.int64)
    iuv[ok] = np.rint(uv[ok])  # round half to even, as Python's round
    iu, iv = iuv[:, 0], iuv[:, 1]
    inside = ok & (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
    vis = np.zeros(len(uv), dtype=np.int64)
    if inside.any():
        # Neighbours outside the image are clamped to the border (a repeated pixel leaves the max as is).
        rows = np.clip(iv[inside, None] + _PATCH[None, :, 0], 0, h - 1)
        cols = np.clip(iu[inside, None] + _PATCH[None, :, 1], 0, w - 1)
        patch = depth[rows, cols]
        far = np.where(patch > 0, patch, np.inf).max(axis=1)
        vis[inside] = np.where(far >= z[inside] - tol, 2, 1)
    return vis.tolist()


def frame_labels(seg: np.ndarray, depth: np.ndarray, K: np.ndarray, T_world_from_cam: np.ndarray,
                 objects: list[LabelledObject], classes: list[str],
                 full_area: dict[int, int] | None, depth_tol: float) -> dict:
    """Labels for every object with at least one visible pixel.

    ``full_area[instance_id]`` = its pixel count when nothing occludes it (None or missing
    entry: no other object can occlude it, so visible = unoccluded).
    """
    h, w = seg.shape
    n = max([o.instance_id for o in objects], default=0)
    areas = np.bincount(seg.ravel(), minlength=n + 1) if n else np.zeros(1, int)
    slices = ndimage.find_objects(seg, max_label=n) if n else []
    T_cam_from_world = np.linalg.inv(T_world_from_cam)
    out = []
    for o in objects:
        area = int(areas[o.instance_id])
        if area == 0:
            continue
        sl = slices[o.instance_id - 1]
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        full = (full_area or {}).get(o.instance_id, area)
        visibility = min(1.0, area / full) if full > 0 else 1.0
        T = T_cam_from_world @ o.T_world_from_obj
        corners = box_corners(o.size) @ T[:3, :3].T + T[:3, 3]
        uv = project(K, corners)
        vis = keypoint_visibility(uv, corners[:, 2], depth, depth_tol)
        center = project(K, T[None, :3, 3])[0]
        # Outside-image corners keep their projection (vis 0); behind-camera ones become 0, 0.
        kps = [[round(float(u), 3), round(float(v), 3), k] if z > 0 else [0.0, 0.0, 0]
               for (u, v), k, z in zip(uv, vis, corners[:, 2])]
        out.append({
            "instance_id": o.instance_id, "class_id": o.class_id, "class_name": o.class_name,
            "is_target": bool(o.is_target),
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": area,
            "visibility": round(float(visibility), 6),
            "pose_cam_from_obj": _matrix(T),
            "center_px": _round_list(center, 3), "center_depth_m": round(float(T[2, 3]), 6),
            "keypoints": kps, "size_m": _round_list(o.size), "symmetry": o.symmetry,
        })
    return {"camera": {"K": _matrix(K), "width": w, "height": h,
                       "T_world_from_cam": _matrix(T_world_from_cam)},
            "objects": out, "classes": list(classes)}
