"""6D pose of every decoded instance: PnP from its predicted corners and centre (original pixels)
against its class's 3D box, with the camera of the image.

Output arrays (added to the instance dict of ``eval.instances``; P = instance slots):
``R (N, P, 3, 3)``, ``t (N, P, 3)`` metres (object box centre, OpenCV camera frame; NaN without a pose),
``reproj_px (N, P)`` (mean reprojection error, pixels: the pose's confidence), ``pose_status (N, P)``
int8: index into :data:`POSE_STATUS` (0 = ok), -1 = empty slot; with a depth head's ``z_over_f (N, P)``
in the instances also ``depth_from (N, P)`` int8 (index into :data:`DEPTH_FROM`).

Depth head (``head.depth``): an instance reaching out of the image (a predicted corner outside it) has
corners PnP can only guess, and PnP's depth, which rests on the corners' spread, is their weakest part
(the ViSP twin's tube: 4.6 % of the distance vs the cube's 1.1 %). Its depth becomes the geometric mean
of PnP's and the head's (``z_over_f`` x the camera's focal length), moving ``t`` along its own ray; every
other instance keeps PnP's. Picked by measurement (docs/benchmarks.md "A depth cue not from the corners"):
the head alone (3.0 % on the cube) or the mean everywhere is worse than PnP for an object in full view.

A pose needs the class's box size (``model.objects[cls]["size_m"]``, or per-instance ``sizes``) and a
camera: per image ``K`` (the labels' ``camera_K``, a ``--camera`` file) or the model's training camera
rescaled to the image size (``Camera.for_image``).

Example::

    inst = instances_to_original(decode_maps(maps, **model.decode_options()), metas)
    inst.update(solve_instances(inst, model.classes, model.objects, cameras))
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sim2real.eval.metrics import box_iou
from sim2real.geometry.camera import Camera, camera_from_dict
from sim2real.geometry.pose import REASONS, project, solve_pose
from sim2real.geometry.symmetry import box_corners

POSE_STATUS = REASONS + ("no_size", "no_camera")
DEPTH_FROM = ("pnp", "pnp+head")   # where a pose's depth came from (``depth_from``)
DEFAULT_MAX_REPROJ_PX = 10.0   # mean corner reprojection error above which a pose is not reported
POSE_BOX_MIN_IOU = 0.7         # the pose's projected 3D box vs the detected box: below, keep the head's centre


def model_camera(model_camera_dict: dict | None) -> Camera | None:
    return camera_from_dict(model_camera_dict) if model_camera_dict else None


def cameras_for(images_wh: Sequence[tuple[int, int]], camera: Camera | None,
                Ks: np.ndarray | None = None) -> list[Camera | None]:
    """One camera per image: its own ``Ks[i]`` when known (non-zero), else ``camera`` resampled to the
    image's size (``camera`` None and no K: no pose)."""
    out = []
    for i, (w, h) in enumerate(images_wh):
        if Ks is not None and Ks[i][2, 2]:
            # labelled images: their own K, no distortion (the labels' projection model)
            out.append(Camera(np.asarray(Ks[i], np.float64), np.zeros(0), w, h))
        else:
            out.append(camera.for_image(int(w), int(h)) if camera is not None else None)
    return out


def label_cameras(true: Mapping[str, np.ndarray], camera: dict | None, n: int) -> list[Camera | None]:
    """One camera per scored image: the labels' ``camera_K`` where known, else the model's ``camera``
    dict (at its own size: scored sets carry no image size)."""
    cam = model_camera(camera)
    Ks = np.asarray(true["camera_K"], np.float64) if "camera_K" in true else None
    wh = (cam.width or 0, cam.height or 0) if cam is not None else (0, 0)
    # a labelled K's image size is not the model camera's: unknown (None)
    sizes = [(None, None) if Ks is not None and Ks[i][2, 2] else wh for i in range(n)]
    return cameras_for(sizes, cam, Ks)


def solve_instances(pred: Mapping[str, np.ndarray], classes: Sequence[str], objects: Mapping[str, dict],
                    cameras: Sequence[Camera | None], sizes: np.ndarray | None = None,
                    max_reproj_px: float = DEFAULT_MAX_REPROJ_PX, use_center: bool = True) -> dict[str, np.ndarray]:
    """Pose arrays (module doc) for every instance of ``pred`` (ORIGINAL pixels, ``label (N, P)``,
    ``keypoints (N, P, K, 2)``, ``center (N, P, 2)``); ``sizes (N, P, 3)`` overrides the class sizes
    where positive (a known object's own size, e.g. the labels' ``size_m`` in a scored sim set);
    optional ``z_over_f (N, P)``: a depth head's centre depth over the focal length (module doc)."""
    lab = np.asarray(pred["label"])
    n, p = lab.shape
    kps = np.asarray(pred["keypoints"], np.float64)
    R = np.full((n, p, 3, 3), np.nan); t = np.full((n, p, 3), np.nan)
    err = np.full((n, p), np.nan, np.float32); status = np.full((n, p), -1, np.int8)
    class_size = class_sizes(classes, objects)
    zf = np.asarray(pred["z_over_f"], np.float64) if "z_over_f" in pred else None
    depth_from = np.where(lab >= 0, 0, -1).astype(np.int8)
    out = {"R": R, "t": t, "reproj_px": err, "pose_status": status, **({"depth_from": depth_from} if zf is not None else {})}
    if kps.ndim != 4 or kps.shape[2] != 8:
        status[lab >= 0] = POSE_STATUS.index("too_few_points")
        return out
    for i in range(n):
        cam = cameras[i] if i < len(cameras) else None
        for j in np.flatnonzero(lab[i] >= 0):
            size = class_size[lab[i, j]]
            if sizes is not None and np.all(sizes[i, j] > 0):
                size = np.asarray(sizes[i, j], np.float64)
            if cam is None:
                status[i, j] = POSE_STATUS.index("no_camera"); continue
            if not np.all(size > 0):
                status[i, j] = POSE_STATUS.index("no_size"); continue
            res = solve_pose(kps[i, j], box_corners(size), cam.K, cam.dist if cam.dist.size else None,
                             center_px=pred["center"][i, j] if use_center else None, max_reproj_px=max_reproj_px)
            status[i, j] = POSE_STATUS.index(res.reason)
            err[i, j] = res.reproj_px
            if res.ok:
                R[i, j], t[i, j] = res.R, res.t
                if zf is not None and zf[i, j] > 0 and _reaches_out(kps[i, j], cam):
                    z_head = float(zf[i, j]) * float(cam.K[0, 0])
                    t[i, j] *= np.sqrt(z_head / t[i, j, 2])      # geometric mean of the two depths, same ray
                    depth_from[i, j] = 1
    return out


def _reaches_out(corners: np.ndarray, cam: Camera) -> bool:
    """Some predicted corner lies outside the image (size from the camera, else twice its principal point)."""
    w = cam.width or 2.0 * float(cam.K[0, 2])
    h = cam.height or 2.0 * float(cam.K[1, 2])
    c = np.asarray(corners, np.float64)
    return bool(((c[:, 0] < 0) | (c[:, 0] > w) | (c[:, 1] < 0) | (c[:, 1] > h)).any())


def pose_centers(pose: Mapping[str, np.ndarray], cameras: Sequence[Camera | None],
                 boxes: np.ndarray | None = None, labels: np.ndarray | None = None,
                 sizes: Sequence[np.ndarray] | None = None, min_iou: float = POSE_BOX_MIN_IOU) -> np.ndarray:
    """``(N, P, 2)`` projection of each solved pose's origin (the 3D box centre), NaN without a pose.

    This is the instance's 2D centre as the PnP fit of its 9 points places it: on the real ViSP camera
    it is 2-3x closer to the labelled centre than the stride-8 head's centre peak (docs/benchmarks.md
    "6D pose"), and scale-free (the object's size does not move it). With ``boxes (N, P, 4)``,
    ``labels`` and per-class ``sizes``, a pose whose projected 3D box disagrees with the detected 2D box
    (IoU < ``min_iou``: an object reaching out of the image, whose far corners are guesses) gives NaN."""
    t = np.asarray(pose["t"], np.float64)
    out = np.full(t.shape[:2] + (2,), np.nan)
    ok = np.asarray(pose["pose_status"]) == 0
    for i, j in zip(*np.nonzero(ok)):
        cam = cameras[i]
        if cam is None:
            continue
        dist = cam.dist if cam.dist.size else None
        if boxes is not None:
            uv = project(box_corners(sizes[int(labels[i, j])]), pose["R"][i, j], t[i, j], cam.K, dist)
            if box_iou(np.r_[uv.min(0), uv.max(0)][None], np.asarray(boxes[i, j], np.float64)[None])[0] < min_iou:
                continue
        out[i, j] = project(np.zeros((1, 3)), np.eye(3), t[i, j], cam.K, dist)[0]
    return out


def class_sizes(classes: Sequence[str], objects: Mapping[str, dict]) -> list[np.ndarray]:
    return [np.asarray(objects.get(c, {}).get("size_m") or [0, 0, 0], np.float64) for c in classes]


def refine_centers(pred: Mapping[str, np.ndarray], classes: Sequence[str], objects: Mapping[str, dict],
                   cameras: Sequence[Camera | None], min_score: float,
                   max_reproj_px: float = DEFAULT_MAX_REPROJ_PX) -> dict[str, np.ndarray]:
    """``pred`` with ``center`` replaced by :func:`pose_centers` (box-consistent poses) for the instances
    scoring at least ``min_score``, the head's centre elsewhere; ``center_head`` keeps the head's."""
    lab = np.where(np.asarray(pred["score"]) >= min_score, np.asarray(pred["label"]), -1)
    pose = solve_instances({**pred, "label": lab}, classes, objects, cameras, max_reproj_px=max_reproj_px)
    refined = pose_centers(pose, cameras, pred.get("box"), lab, class_sizes(classes, objects))
    center = np.asarray(pred["center"], np.float64)
    ok = np.isfinite(refined).all(-1)
    return {**pred, "center_head": center, "center": np.where(ok[..., None], refined, center).astype(center.dtype)}
