"""Horizontal-flip test-time augmentation of the corners (6D pose precision, issue 13), numpy.

The model also sees each frame mirrored; the mirrored frame's instances are mapped back, matched to
the frame's own (same class, nearest centre within a quarter of the box diagonal) and their corners
and centre averaged in, each corner weighted by its corner-heatmap score (``kp_score``: a corner that
snapped to its heatmap peak in one view beats the other view's bare regression). Boxes, scores and
classes stay the frame's own. docs/benchmarks.md "6D pose", "Cheaper corner precision at inference" has the
numbers: on the ViSP twin's cube the median corner error 2.58 -> 2.19 px; it costs a second forward.

A mirror swaps handedness: the mirrored image of a box is a box seen in some proper pose whose corners
are relabelled by a reflection of the object frame (one axis sign flipped; for a box the three choices
differ by a half turn, which maps a box onto itself). What the network calls corner ``i`` in the mirrored
frame is therefore corner ``order[i]`` of the original for one ``order`` among the class's symmetric
corner orders (``geometry.symmetry``) composed with a reflection; the order used is the one that brings
the mirrored corners closest to the frame's own (the symmetric assignment the loss and the metrics use);
views that disagree by more than ``AGREE_FRACTION`` of the box diagonal are not merged.

Example::

    out = {**maps, **{FLIP_PREFIX + k: v for k, v in flipped_maps.items()}}
    pred = merge_mirrored(decode_maps(maps, ...), mirror_instances(decode_maps(flipped_maps, ...), w),
                          class_corner_orders(classes, objects))
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sim2real.geometry.symmetry import CORNER_SIGNS, symmetry_from_dict

FLIP_PREFIX = "flip/"          # output keys of the mirrored frame's maps (``flip/heatmap``, ...)
MATCH_FRACTION = 0.25          # a mirrored instance matches within this fraction of the box diagonal
MIN_CORNER_WEIGHT = 1e-3       # a corner with no heatmap score still counts a little
# The two views must agree: mean corner distance (best order) at most this fraction of the box diagonal,
# else the frame keeps its own corners. Without it the merge took the real ViSP test frames' ADD-S rate
# from 0.90 to 0.70 (sim-only model) and 0.93 to 0.83 (adapted); one value tried (docs/benchmarks.md).
AGREE_FRACTION = 0.05


def _reflection(axis: int) -> np.ndarray:
    f = np.ones(3)
    f[axis] = -1
    return np.array([int(np.flatnonzero(np.all(CORNER_SIGNS == s * f, axis=1))[0]) for s in CORNER_SIGNS])


#: Corner permutations of the object-frame reflections (x, y or z sign flipped).
REFLECTIONS = np.stack([_reflection(a) for a in range(3)])


def mirrored_orders(perms: np.ndarray) -> np.ndarray:
    """``(Q, 8)`` candidate orders for a mirrored view's corners: the class's symmetric orders ``perms
    (P, 8)`` composed with each reflection (distinct rows)."""
    perms = np.asarray(perms, np.int64).reshape(-1, 8)
    return np.unique(np.concatenate([perms[:, r] for r in REFLECTIONS]), axis=0)


def class_corner_orders(classes: Sequence[str], objects: Mapping[str, dict] | None) -> tuple[np.ndarray, ...]:
    """Per class the mirrored-view candidate orders (:func:`mirrored_orders` of its symmetry)."""
    objects = objects or {}
    return tuple(mirrored_orders(symmetry_from_dict(objects.get(c, {}).get("symmetry")).perms) for c in classes)


def mirror_instances(pred: Mapping[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """Instances decoded on a horizontally mirrored input of ``width`` px (model-input pixels, pixel
    centres at integers, boxes in edge coordinates) -> the unmirrored input's pixels."""
    out = {k: np.array(v, copy=True) for k, v in pred.items()}
    for key in ("center", "keypoints"):
        if key in out:
            out[key][..., 0] = width - 1 - np.asarray(pred[key])[..., 0]
    if "box" in out:
        box = np.asarray(pred["box"])
        out["box"][..., 0], out["box"][..., 2] = width - box[..., 2], width - box[..., 0]
    return out


def merge_mirrored(base: Mapping[str, np.ndarray], mirrored: Mapping[str, np.ndarray],
                   orders: Sequence[np.ndarray], agree: float = AGREE_FRACTION) -> dict[str, np.ndarray]:
    """``base`` (padded instances, ``label (B, P)``, ``center``, ``box``, ``keypoints (B, P, 8, 2)``,
    ``kp_score``) with each instance's corners and centre averaged with its match in ``mirrored``
    (already mapped back, :func:`mirror_instances`); ``orders[c]``: class c's candidate corner orders
    (:func:`class_corner_orders`). Instances without a match, or whose match's corners are on average
    farther than ``agree`` x the box diagonal from their own, keep their own corners and centre."""
    out = {k: np.array(v, copy=True) for k, v in base.items()}
    lab, mlab = np.asarray(base["label"]), np.asarray(mirrored["label"])
    kps, mkps = np.asarray(base["keypoints"], np.float64), np.asarray(mirrored["keypoints"], np.float64)
    if kps.ndim != 4 or kps.shape[2] != 8:
        return out
    ksc = np.maximum(np.asarray(base["kp_score"], np.float64), MIN_CORNER_WEIGHT)
    mksc = np.maximum(np.asarray(mirrored["kp_score"], np.float64), MIN_CORNER_WEIGHT)
    for i, j in zip(*np.nonzero(lab >= 0)):
        c = lab[i, j]
        cand = np.flatnonzero(mlab[i] == c)
        if not len(cand):
            continue
        d = np.linalg.norm(np.asarray(mirrored["center"][i, cand], np.float64) - base["center"][i, j], axis=-1)
        k = cand[int(np.argmin(d))]
        box = np.asarray(base["box"][i, j], np.float64)
        if d.min() > MATCH_FRACTION * np.hypot(box[2] - box[0], box[3] - box[1]):
            continue
        cand_kp = mkps[i, k][orders[c]]                                                # (Q, 8, 2)
        cost = np.linalg.norm(cand_kp - kps[i, j][None], axis=-1).mean(-1)
        q = int(np.argmin(cost))
        if cost[q] > agree * np.hypot(box[2] - box[0], box[3] - box[1]):
            continue
        w0, w1 = ksc[i, j][:, None], mksc[i, k][orders[c][q]][:, None]
        out["keypoints"][i, j] = (w0 * kps[i, j] + w1 * cand_kp[q]) / (w0 + w1)
        out["center"][i, j] = (np.asarray(base["center"][i, j], np.float64) + mirrored["center"][i, k]) / 2
    return out
