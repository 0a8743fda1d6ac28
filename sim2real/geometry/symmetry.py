"""Object symmetries as rotations of the object's 3D box, and what they do to its 8 box corners.

A symmetric object (a cube with random textures, a plain cylinder) looks the same in several poses, so
"which corner is corner 0" cannot be learned from images. A symmetry is a rotation ``S`` of the object
frame (centre of the 3D box; corners in the order of docs/contracts.md) under which the object looks the
same: the pose ``R`` and ``R @ S`` are equivalent. ``S`` maps the box onto itself, so it permutes the box
corners: corner ``i`` of pose ``R @ S`` is corner ``perm[i]`` of pose ``R``, i.e. the keypoints of the
equivalent labelling are ``kp[perm]``.

Names (scene YAML ``symmetry:``, checkpoints):

- ``none``: no symmetry (identity only).
- ``box``: the rotations that map the object's box onto itself given its size (4 for three unequal
  sides, 8 for a square cross-section, 24 for a cube: "a box with three equal sides is a cube").
- ``cube``: the 24 rotations of a cube.
- ``cylinder``: any rotation about the object's z axis, and the half turn that swaps the two ends
  (continuous: ``axis = "z"``; on the corners, the 8 rotations of a square prism).
- ``sphere``: any rotation (``axis = "all"``; on the corners, the 24 of a cube).
- a list of corner permutations: each must be a rotation of the box (checked).

Example::

    sym = symmetry("cube", size=[0.084] * 3)
    Rc, perm = canonicalize(R, sym)          # labels: keypoints[perm] belong to pose Rc
    rotation_error_deg(R_pred, R_gt, sym)    # 0 for any symmetric equivalent
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

NAMES = ("none", "box", "cube", "cylinder", "sphere")
NUM_CORNERS = 8
# Corner order of docs/contracts.md (object frame, signs of the half extents) = the ViSP cube CAD order.
CORNER_SIGNS = np.array([(1, -1, -1), (-1, -1, -1), (-1, 1, -1), (1, 1, -1),
                         (1, -1, 1), (-1, -1, 1), (-1, 1, 1), (1, 1, 1)], dtype=np.float64)


class SymmetryError(ValueError):
    """A symmetry that is not one (unknown name, a permutation that is no rotation of the box)."""


def box_corners(size: Sequence[float]) -> np.ndarray:
    """(8, 3) corners of a box of full extents ``size`` centred at the origin, contract order."""
    return CORNER_SIGNS * (np.asarray(size, np.float64).reshape(3) / 2.0)


def _cube_rotations() -> np.ndarray:
    """The 24 proper rotations that map the axes onto (signed) axes, identity first."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            for r, (c, s) in enumerate(zip(perm, signs)):
                m[r, c] = s
            if np.linalg.det(m) > 0:
                out.append(m)
    out.sort(key=lambda m: -np.trace(m))  # identity first
    return np.stack(out)


CUBE_ROTATIONS = _cube_rotations()


def corner_permutation(S: np.ndarray) -> np.ndarray | None:
    """Corner permutation of a signed-axis rotation ``S``: ``S @ X_i = X_perm[i]``; None if it is not one."""
    mapped = CORNER_SIGNS @ np.asarray(S).T
    perm = []
    for v in mapped:
        hit = np.flatnonzero(np.all(np.abs(CORNER_SIGNS - v) < 1e-6, axis=1))
        if len(hit) != 1:
            return None
        perm.append(int(hit[0]))
    return np.asarray(perm, np.int64)


def _maps_box(S: np.ndarray, size: np.ndarray, rtol: float) -> bool:
    return bool(np.allclose(np.abs(S) @ size, size, rtol=rtol, atol=1e-9))


@dataclass(frozen=True)
class Symmetry:
    """``rotations (P, 3, 3)`` (identity first) and ``perms (P, 8)`` of the discrete symmetries;
    ``axis``: continuous symmetry, ``None``, ``"z"`` (about the object z axis) or ``"all"``."""
    name: str
    rotations: np.ndarray
    perms: np.ndarray
    axis: str | None = None

    def to_dict(self) -> dict:
        """JSON-able form (checkpoints, export metadata); :func:`symmetry_from_dict` reads it back."""
        return {"name": self.name, "perms": self.perms.tolist(), "axis": self.axis}

    @property
    def size(self) -> int:
        return len(self.perms)


NO_SYMMETRY = Symmetry("none", np.eye(3)[None], np.arange(NUM_CORNERS)[None], None)


def symmetry(spec: str | Sequence[Sequence[int]] | None, size: Sequence[float] | None = None,
             rtol: float = 1e-3, where: str = "symmetry") -> Symmetry:
    """A :class:`Symmetry` from a name or a list of corner permutations, for a box of ``size``."""
    sz = np.asarray(size if size is not None else (1.0, 1.0, 1.0), np.float64).reshape(3)
    if spec is None or (isinstance(spec, str) and spec == "none"):
        return NO_SYMMETRY
    if isinstance(spec, str):
        if spec not in NAMES:
            raise SymmetryError(f"{where}: expected one of {list(NAMES)} or a list of corner permutations, "
                                f"got {spec!r}")
        if spec in ("cube", "sphere"):
            rots = CUBE_ROTATIONS
        elif spec == "box":
            rots = np.stack([S for S in CUBE_ROTATIONS if _maps_box(S, sz, rtol)])
        else:  # cylinder: quarter turns about z (the box of a round section is square) and the end swap
            rots = np.stack([S for S in CUBE_ROTATIONS if abs(abs(S[2, 2]) - 1) < 1e-9])
        perms = np.stack([corner_permutation(S) for S in rots])
        axis = {"cylinder": "z", "sphere": "all"}.get(spec)
        return Symmetry(spec, rots, perms, axis)
    perms_in = [list(p) for p in spec]
    rots, perms = [np.eye(3)], [np.arange(NUM_CORNERS)]
    for j, p in enumerate(perms_in):
        if sorted(p) != list(range(NUM_CORNERS)):
            raise SymmetryError(f"{where}[{j}]: expected a permutation of 0..7, got {p}")
        match = [S for S in CUBE_ROTATIONS if np.array_equal(corner_permutation(S), p)]
        if not match or not _maps_box(match[0], sz, rtol):
            raise SymmetryError(f"{where}[{j}]: permutation {p} is not a rotation of the object's box "
                                f"(size {sz.round(4).tolist()})")
        if p != list(range(NUM_CORNERS)):
            rots.append(match[0]); perms.append(np.asarray(p))
    return Symmetry("perms", np.stack(rots), np.stack(perms).astype(np.int64), None)


def symmetry_from_dict(d: dict | None) -> Symmetry:
    """Inverse of :meth:`Symmetry.to_dict` (rotations recomputed from the permutations)."""
    if not d:
        return NO_SYMMETRY
    perms = np.asarray(d["perms"], np.int64).reshape(-1, NUM_CORNERS)
    rots = []
    for p in perms:
        match = [S for S in CUBE_ROTATIONS if np.array_equal(corner_permutation(S), p)]
        if not match:
            raise SymmetryError(f"symmetry {d.get('name')!r}: permutation {p.tolist()} is not a box rotation")
        rots.append(match[0])
    return Symmetry(str(d.get("name", "perms")), np.stack(rots), perms, d.get("axis"))


# --- rotations ------------------------------------------------------------------------------------

def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle of rotation matrices ``(..., 3, 3)`` in degrees."""
    R = np.asarray(R, np.float64)
    # atan2(2 sin, 2 cos): exact near 0 where arccos((tr - 1) / 2) loses half the digits
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    tr = np.trace(R, axis1=-2, axis2=-1)
    return np.degrees(np.arctan2(np.linalg.norm(v, axis=-1), tr - 1.0))


def _rz(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def closest_equivalent(R: np.ndarray, sym: Symmetry, target: np.ndarray | None = None
                       ) -> tuple[np.ndarray, int]:
    """The pose equivalent to ``R`` under ``sym`` closest to ``target`` (default identity), and the
    index of the discrete symmetry used (its corner permutation applies when ``sym.axis`` is None)."""
    R = np.asarray(R, np.float64)
    T = np.eye(3) if target is None else np.asarray(target, np.float64)
    if sym.axis == "all":
        return T.copy(), 0
    best, best_p, best_tr = R, 0, -np.inf
    for p, S in enumerate(sym.rotations):
        M = R @ S
        if sym.axis == "z":  # best turn about the object z: maximise trace(T^T M Rz(theta))
            A = T.T @ M
            M = M @ _rz(np.arctan2(A[0, 1] - A[1, 0], A[0, 0] + A[1, 1]))
        tr = float(np.trace(T.T @ M))
        if tr > best_tr + 1e-9:
            best, best_p, best_tr = M, p, tr
    return best, best_p


def canonicalize(R: np.ndarray, sym: Symmetry) -> tuple[np.ndarray, np.ndarray]:
    """Canonical label of a pose: the equivalent rotation closest to the camera axes, and the corner
    permutation to apply to discrete-symmetry keypoints (``keypoints[perm]``). For continuous
    symmetries the corners of the canonical rotation must be re-projected (the permutation is that of
    the nearest discrete symmetry)."""
    Rc, p = closest_equivalent(R, sym)
    return Rc, sym.perms[p]


def rotation_error_deg(R_pred: np.ndarray, R_gt: np.ndarray, sym: Symmetry = NO_SYMMETRY) -> float:
    """Rotation error modulo the object's symmetry (0 for any symmetric equivalent of ``R_gt``)."""
    if sym.axis == "all":
        return 0.0
    R_eq, _ = closest_equivalent(R_gt, sym, target=R_pred)
    return float(rotation_angle_deg(np.asarray(R_pred).T @ R_eq))


def symmetric_corner_error(pred: np.ndarray, gt: np.ndarray, sym: Symmetry = NO_SYMMETRY,
                           valid: np.ndarray | None = None) -> float:
    """Mean distance of predicted corners ``(8, D)`` to the ground truth in its best symmetric
    order (``gt[perm]``), over ``valid`` ground-truth corners (default all); NaN if none is valid."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    best = np.inf
    for perm in sym.perms:
        ok = np.ones(len(gt), bool) if valid is None else np.asarray(valid, bool)[perm]
        if not ok.any():
            continue
        best = min(best, float(np.linalg.norm(pred[ok] - gt[perm][ok], axis=-1).mean()))
    return best if np.isfinite(best) else float("nan")
