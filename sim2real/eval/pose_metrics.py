"""6D pose metrics of the matched instances (issue 13), numpy + OpenCV (no torch).

Scored on the same pairs as the matched-instance detection metrics (``eval.detection.match_instances``:
predictions of the scored classes from the model's score threshold, class-agnostic, box IoU >= 0.5), so
the cost is a PnP per matched instance (~0.1 ms each), never per decoded slot.

Ground truth (``CocoDataset.original_targets`` / ``Pool.original_targets``): ``rot (N, M, 3, 3)``,
``center_3d (N, M, 3)`` metres, ``size (N, M, 3)`` (0 = unknown), ``has_pose (N, M)``, per image
``camera_K (N, 3, 3)`` (0 = unknown), plus the corner ``keypoints`` / ``kp_vis`` in ORIGINAL pixels.
The object is the matched ground truth's (a known object, as in BOP): its class gives the symmetry and,
when its own ``size`` is unknown (the real ViSP labels), the box size (``model.objects[cls]["size_m"]``).
The pose is solved from the predicted corners and centre (``eval.pose.solve_instances``) with the
labels' camera (``camera_K``; a ground-truth pose always comes with one), else the model's camera.

Metrics (None when undefined: no matched instance with a ground-truth pose, or no pose solved):

- ``pose_center_err_cm_median`` / ``_mean``: |t_pred - center_3d| in cm over the solved poses;
- ``pose_adds_cm_median``: ADD-S over the 8 box corners after aligning the ground-truth rotation to its
  symmetric equivalent closest to the prediction (``geometry.pose.symmetric_add_s``), cm;
- ``pose_adds_0.1d``: fraction of the matched instances with a ground-truth pose whose ADD-S is below
  10 % of the object's diameter (box diagonal); an instance without a pose counts as a failure;
- ``pose_rot_err_deg_median``: rotation error modulo the class symmetry, degrees;
- ``corner_err_px_median``: mean distance of the predicted corners to the ground-truth corners in their
  best symmetric order (``symmetric_corner_error``), over the corners with ``kp_vis >= 1``, ORIGINAL
  pixels; every matched instance with such a corner (no pose needed);
- ``pose_ok_fraction``: matched instances with a ground-truth pose that got a pose;
- ``pose_reproj_px_median``: mean corner reprojection error of the PnP solutions (those rejected for a
  reprojection error above ``max_reproj_px`` included), pixels;
- per scored class (class of the ground truth) ``<metric>/<class>`` of ``pose_center_err_cm_median``,
  ``pose_rot_err_deg_median``, ``pose_adds_0.1d``, ``corner_err_px_median`` (``POSE_PER_CLASS``).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from sim2real.eval.metrics import POSE_METRIC_NAMES, POSE_PER_CLASS
from sim2real.eval.pose import DEFAULT_MAX_REPROJ_PX, POSE_STATUS, label_cameras, solve_instances
from sim2real.geometry.pose import diameter, symmetric_add_s
from sim2real.geometry.symmetry import rotation_error_deg, symmetric_corner_error, symmetry_from_dict

ADDS_FRACTION = 0.1                                 # ADD-S threshold as a fraction of the object diameter
_OK = POSE_STATUS.index("ok")


def _median(v: Sequence[float]) -> Optional[float]:
    return float(np.median(v)) if len(v) else None


def _mean(v: Sequence[float]) -> Optional[float]:
    return float(np.mean(v)) if len(v) else None


def empty_pose_metrics(classes: Sequence[str], scored: Optional[Sequence[int]] = None) -> dict:
    """Every pose metric undefined (None), per scored class too."""
    cats = range(len(classes)) if scored is None else sorted(set(int(c) for c in scored))
    out: dict[str, Any] = dict.fromkeys(POSE_METRIC_NAMES)
    out.update({f"{m}/{classes[c]}": None for m in POSE_PER_CLASS for c in cats})
    return out


def pose_metrics(pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray], match: np.ndarray,
                 classes: Sequence[str], objects: Optional[Mapping[str, dict]] = None,
                 camera: Optional[dict] = None, scored: Optional[Sequence[int]] = None,
                 max_reproj_px: float = DEFAULT_MAX_REPROJ_PX) -> dict:
    """The pose metrics (module doc) of ``pred`` (decoded instances, ORIGINAL pixels: ``label``,
    ``keypoints (N, P, 8, 2)``, optional ``center``) against ``true`` over the pairs of ``match``
    (``(N, P)`` ground-truth slot per prediction, -1 = unmatched: ``detection.match_instances``).
    ``objects``: the model's ``{class: {"size_m", "symmetry"}}``; ``camera``: its training camera dict
    (used only for images whose labels have no ``camera_K``); ``scored``: the class indices with a
    per-class key (default all)."""
    out = empty_pose_metrics(classes, scored)
    objects = objects or {}
    match = np.asarray(match, np.int64)
    kps = np.asarray(pred.get("keypoints", np.zeros((0,))), np.float64)
    if kps.ndim != 4 or kps.shape[2] != 8 or np.asarray(true.get("keypoints", np.zeros((0,)))).ndim != 4:
        return out
    ii, jj = np.nonzero(match >= 0)
    if not len(ii):
        return out
    gg = match[ii, jj]
    t_label = np.asarray(true["label"], np.int64)
    gt_cls = t_label[ii, gg]
    syms = [symmetry_from_dict(objects.get(c, {}).get("symmetry")) for c in classes]

    # Corner error: every matched pair with a labelled corner (vis >= 1), no pose needed.
    t_kp, t_vis = np.asarray(true["keypoints"], np.float64), np.asarray(true["kp_vis"])
    corner = [symmetric_corner_error(kps[i, j], t_kp[i, g], syms[c], t_vis[i, g] >= 1)
              for i, j, g, c in zip(ii, jj, gg, gt_cls)]
    out["corner_err_px_median"] = _median([e for e in corner if np.isfinite(e)])
    per_class: dict[str, dict[int, list[float]]] = {m: {} for m in POSE_PER_CLASS}
    for e, c in zip(corner, gt_cls):
        if np.isfinite(e):
            per_class["corner_err_px_median"].setdefault(int(c), []).append(e)

    for c, vals in per_class["corner_err_px_median"].items():
        if f"corner_err_px_median/{classes[c]}" in out:
            out[f"corner_err_px_median/{classes[c]}"] = _median(vals)
    del per_class["corner_err_px_median"]
    has_pose = np.asarray(true["has_pose"], bool)[ii, gg] if "has_pose" in true else np.zeros(len(ii), bool)
    if not has_pose.any():
        return out
    ii, jj, gg, gt_cls = ii[has_pose], jj[has_pose], gg[has_pose], gt_cls[has_pose]

    # PnP of just these instances, as the ground truth's object (class and, when labelled, own size).
    n, p = match.shape
    label = np.full((n, p), -1, np.int64)
    label[ii, jj] = gt_cls
    t_size = np.asarray(true["size"], np.float64) if "size" in true else np.zeros(t_label.shape + (3,))
    sizes = np.zeros((n, p, 3))
    sizes[ii, jj] = t_size[ii, gg]
    cams = label_cameras(true, camera, n)
    sub = {"label": label, "keypoints": kps,
           "center": np.asarray(pred["center"], np.float64) if "center" in pred else np.zeros((n, p, 2))}
    if "z_over_f" in pred:   # a depth head's cue (eval.pose module doc)
        sub["z_over_f"] = np.asarray(pred["z_over_f"])
    pose = solve_instances(sub, classes, objects, cams, sizes=sizes, max_reproj_px=max_reproj_px,
                           use_center="center" in pred)

    status = pose["pose_status"][ii, jj]
    ok = status == _OK
    reproj = pose["reproj_px"][ii, jj]
    center_3d = np.asarray(true["center_3d"], np.float64)[ii, gg]
    rot = np.asarray(true["rot"], np.float64)[ii, gg]
    center_err, adds, rot_err, passed = [], [], [], np.zeros(len(ii), bool)
    for k in np.flatnonzero(ok):
        i, j, c = ii[k], jj[k], int(gt_cls[k])
        R, t = pose["R"][i, j], pose["t"][i, j]
        size = sizes[i, j] if np.all(sizes[i, j] > 0) else np.asarray(objects[classes[c]]["size_m"], np.float64)
        e = 100.0 * float(np.linalg.norm(t - center_3d[k]))
        a = symmetric_add_s(R, t, rot[k], center_3d[k], size, syms[c])
        center_err.append(e)
        adds.append(100.0 * a)
        passed[k] = a < ADDS_FRACTION * diameter(size)
        rot_err.append(rotation_error_deg(R, rot[k], syms[c]))
        per_class["pose_center_err_cm_median"].setdefault(c, []).append(e)
        per_class["pose_rot_err_deg_median"].setdefault(c, []).append(rot_err[-1])
    for k, c in enumerate(gt_cls):   # a matched instance without a pose fails ADD-S
        per_class["pose_adds_0.1d"].setdefault(int(c), []).append(float(passed[k]))
    out.update({"pose_center_err_cm_median": _median(center_err), "pose_center_err_cm_mean": _mean(center_err),
                "pose_adds_cm_median": _median(adds), "pose_adds_0.1d": float(passed.mean()),
                "pose_rot_err_deg_median": _median(rot_err), "pose_ok_fraction": float(ok.mean()),
                "pose_reproj_px_median": _median(reproj[np.isfinite(reproj)].tolist())})
    for name, by_class in per_class.items():
        for c, vals in by_class.items():
            key = f"{name}/{classes[c]}"
            if key in out:
                out[key] = _mean(vals) if name == "pose_adds_0.1d" else _median(vals)
    return out
