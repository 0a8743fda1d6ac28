"""6D pose of every decoded instance: PnP from its predicted corners and centre (original pixels)
against its class's 3D box, with the camera of the image.

Output arrays (added to the instance dict of ``eval.instances``; P = instance slots):
``R (N, P, 3, 3)``, ``t (N, P, 3)`` metres (object box centre, OpenCV camera frame; NaN without a pose),
``reproj_px (N, P)`` (mean reprojection error, pixels: the pose's confidence), ``pose_status (N, P)``
int8: index into :data:`POSE_STATUS` (0 = ok), -1 = empty slot.

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

from sim2real.geometry.camera import Camera, camera_from_dict
from sim2real.geometry.pose import REASONS, solve_pose
from sim2real.geometry.symmetry import box_corners

POSE_STATUS = REASONS + ("no_size", "no_camera")
DEFAULT_MAX_REPROJ_PX = 10.0   # mean corner reprojection error above which a pose is not reported


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


def solve_instances(pred: Mapping[str, np.ndarray], classes: Sequence[str], objects: Mapping[str, dict],
                    cameras: Sequence[Camera | None], sizes: np.ndarray | None = None,
                    max_reproj_px: float = DEFAULT_MAX_REPROJ_PX, use_center: bool = True) -> dict[str, np.ndarray]:
    """Pose arrays (module doc) for every instance of ``pred`` (ORIGINAL pixels, ``label (N, P)``,
    ``keypoints (N, P, K, 2)``, ``center (N, P, 2)``); ``sizes (N, P, 3)`` overrides the class sizes
    where positive (a known object's own size, e.g. the labels' ``size_m`` in a scored sim set)."""
    lab = np.asarray(pred["label"])
    n, p = lab.shape
    kps = np.asarray(pred["keypoints"], np.float64)
    R = np.full((n, p, 3, 3), np.nan); t = np.full((n, p, 3), np.nan)
    err = np.full((n, p), np.nan, np.float32); status = np.full((n, p), -1, np.int8)
    class_size = [np.asarray(objects.get(c, {}).get("size_m") or [0, 0, 0], np.float64) for c in classes]
    if kps.ndim != 4 or kps.shape[2] != 8:
        status[lab >= 0] = POSE_STATUS.index("too_few_points")
        return {"R": R, "t": t, "reproj_px": err, "pose_status": status}
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
    return {"R": R, "t": t, "reproj_px": err, "pose_status": status}
