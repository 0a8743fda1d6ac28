"""What a dataset says about each object's 3D geometry: ground-truth poses per instance, canonical
corner labels for symmetric objects, and per class the box size and symmetry a model keeps.

Ground truth per instance (padded like the other instance arrays, docs/contracts.md "Instances"):
``rot (N, M, 3, 3)`` (object axes in the camera frame, from ``pose_cam_from_obj``: the same for the
box-centred sim frame and a CAD frame with the same axes, such as the ViSP cube's), ``center_3d
(N, M, 3)`` metres (``center_px`` back-projected at ``center_depth_m``: frame-independent),
``size (N, M, 3)`` (``size_m``; 0 = unknown), ``has_pose (N, M)``; per image ``camera_K (N, 3, 3)``
(0 = unknown).

Canonical labels: a symmetric object's corners are relabelled to its equivalent pose closest to the
camera axes (``sim2real.geometry.symmetry.canonicalize``), so that "corner 0" means the same thing in
every image; the head's keypoint loss also takes the best symmetric order (``models.heads``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sim2real.geometry.pose import backproject, project
from sim2real.geometry.symmetry import (NO_SYMMETRY, Symmetry, SymmetryError, box_corners, canonicalize,
                                        symmetry, symmetry_from_dict)


def as_symmetry(spec: Any, size=None, where: str = "symmetry") -> Symmetry:
    """A :class:`Symmetry` from a Symmetry, its dict form, a name or a permutation list."""
    if isinstance(spec, Symmetry):
        return spec
    if isinstance(spec, dict):
        return symmetry_from_dict(spec)
    return symmetry(spec, size, where=where)


class InstancePoses:
    """Collects pose ground truth while a dataset indexes its annotations (see module doc)."""

    def __init__(self, n: int, m: int, source: Path, symmetries: Mapping[str, Any] | None, canonical: bool):
        self.source, self.canonical = source, canonical
        self.model_syms = {c: as_symmetry(s, where=f"symmetry of class '{c}'") for c, s in (symmetries or {}).items()}
        self.rot = np.zeros((n, m, 3, 3)); self.center_3d = np.zeros((n, m, 3))
        self.size = np.zeros((n, m, 3)); self.has_pose = np.zeros((n, m), bool)
        self.K = np.zeros((n, 3, 3))
        self.stats: dict[str, dict] = {}   # class -> {"sizes": [...], "specs": Counter}
        self._cache: dict = {}

    def camera(self, i: int, img: dict) -> None:
        if img.get("camera_K") is not None:
            self.K[i] = np.asarray(img["camera_K"], np.float64).reshape(3, 3)

    def _symmetry(self, cls: str, ann: dict, size) -> Symmetry:
        if cls in self.model_syms:
            return self.model_syms[cls]
        spec = ann.get("symmetry")
        if spec is None:
            return NO_SYMMETRY
        key = (json.dumps(spec), None if size is None else tuple(np.round(size, 6)))
        if key not in self._cache:
            try:
                self._cache[key] = symmetry(spec, size, where=f"{self.source}: annotation {ann.get('id')} 'symmetry'")
            except SymmetryError as e:
                raise ValueError(str(e)) from None
        return self._cache[key]

    def add(self, i: int, j: int, ann: dict, cls: str, kps: np.ndarray, vis: np.ndarray, image_wh) -> None:
        """Record instance (i, j); canonicalizes ``kps[i, j]`` / ``vis[i, j]`` in place."""
        size = ann.get("size_m")
        size = np.asarray(size, np.float64).reshape(3) if size is not None else None
        st = self.stats.setdefault(cls, {"sizes": [], "specs": Counter()})
        if size is not None:
            st["sizes"].append(size)
            self.size[i, j] = size
        if "symmetry" in ann:
            st["specs"][json.dumps(ann["symmetry"])] += 1
        pose = ann.get("pose_cam_from_obj")
        if pose is None:
            return
        T = np.asarray(pose, np.float64).reshape(4, 4)
        R = T[:3, :3]
        self.rot[i, j] = R
        K, depth = self.K[i], ann.get("center_depth_m")
        if K[2, 2] and depth is not None and ann.get("center_px") is not None:
            self.center_3d[i, j] = backproject(ann["center_px"], float(depth), K)
            self.has_pose[i, j] = True
        sym = self._symmetry(cls, ann, size)
        if not self.canonical or sym.size == 1 and sym.axis is None or kps.shape[2] != 8:
            return
        Rc, perm = canonicalize(R, sym)
        self.rot[i, j] = Rc
        if sym.axis is None or size is None or not K[2, 2]:
            kps[i, j] = kps[i, j][perm]
            vis[i, j] = vis[i, j][perm]
            return
        # continuous symmetry: the canonical pose's own box corners (the box turns with the spin)
        uv = project(box_corners(size), Rc, T[:3, 3], K)
        w, h = image_wh
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1) if w and h else True
        kps[i, j] = uv
        vis[i, j] = np.where(inside, np.maximum(vis[i, j][perm], 1), 0)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"rot": self.rot.astype(np.float32), "center_3d": self.center_3d.astype(np.float32),
                "size": self.size.astype(np.float32), "has_pose": self.has_pose, "camera_K": self.K}


def object_models(stats_list, classes) -> dict[str, dict]:
    """Per class ``{"size_m": [sx, sy, sz] | None, "symmetry": Symmetry.to_dict()}`` from datasets'
    ``object_stats`` (median size; the most common declared symmetry, built for the median size)."""
    out = {}
    for cls in classes:
        sizes, specs = [], Counter()
        for st in stats_list:
            s = st.get(cls)
            if s:
                sizes += s["sizes"]; specs.update(s["specs"])
        size = np.median(np.stack(sizes), axis=0) if sizes else None
        spec = json.loads(specs.most_common(1)[0][0]) if specs else "none"
        sym = symmetry(spec, size, where=f"symmetry of class '{cls}'")
        out[cls] = {"size_m": None if size is None else [round(float(v), 6) for v in size],
                    "symmetry": sym.to_dict()}
    return out


def training_camera(datasets) -> dict | None:
    """The camera of the training images: median ``camera_K`` at their most common image size (the
    twin's intrinsics; ``Camera.for_image`` rescales it to another image size); None if unknown."""
    Ks, sizes = [], Counter()
    for d in datasets:
        K = d.targets["camera_K"]
        hw = d.image_hw
        for i in range(len(K)):
            if K[i, 2, 2]:
                sizes[(int(hw[i, 1]), int(hw[i, 0]))] += 1
                Ks.append((K[i], (int(hw[i, 1]), int(hw[i, 0]))))
    if not Ks:
        return None
    (w, h), _ = sizes.most_common(1)[0]
    K = np.median(np.stack([k for k, s in Ks if s == (w, h)]), axis=0)
    return {"K": [[round(float(v), 6) for v in row] for row in K], "dist": [], "width": w, "height": h}
