"""The ``predict`` JSONL record of docs/contracts.md, built in one place for ``sim2real predict``
and the deployment loop, and the 6D pose each reported instance carries (:class:`PoseSetup`).

Plain numpy + OpenCV (no torch): an ONNX deployment imports this without loading the training stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from sim2real.eval.pose import DEFAULT_MAX_REPROJ_PX, DEPTH_FROM, POSE_STATUS, class_sizes, model_camera, pose_centers, solve_instances
from sim2real.geometry.camera import Camera, read_camera_file

#: The pose fields every instance of a record carries when poses are solved (``--no-pose``: none).
POSE_FIELDS = ("pose", "center_3d", "reproj_px", "pose_status")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of ``(..., C)`` logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def rounded(v: float, nd: int = 2) -> float | None:
    """``v`` rounded to ``nd`` decimals; None for NaN/inf (JSON has no NaN)."""
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


@dataclass
class PoseSetup:
    """What the 6D pose of a reported instance needs: every class's ``objects[cls]["size_m"]`` (the
    model's, from the checkpoint or the export metadata), the camera (a ``--camera`` file, else the
    model's training camera; resampled to each frame's size; None: ``pose_status`` "no_camera") and
    the largest mean reprojection error (px) a pose may have."""

    objects: Mapping[str, dict] = field(default_factory=dict)
    camera: Camera | None = None
    max_reproj_px: float = DEFAULT_MAX_REPROJ_PX

    @classmethod
    def build(cls, objects: Mapping[str, dict] | None, camera: dict | None, camera_file: str | None = None,
              max_reproj_px: float = DEFAULT_MAX_REPROJ_PX) -> "PoseSetup":
        """``camera_file`` (OpenCV/ROS calibration YAML; its distortion is used) wins over the model's
        ``camera`` dict. A bad file raises ``CameraFileError`` (a ValueError) / ``FileNotFoundError``."""
        if not max_reproj_px > 0:
            raise ValueError(f"--max-reproj-px must be > 0, got {max_reproj_px}")
        cam = read_camera_file(camera_file) if camera_file else model_camera(camera)
        return cls(dict(objects or {}), cam, float(max_reproj_px))

    def camera_for(self, width: int, height: int) -> Camera | None:
        """The camera of a ``width`` x ``height`` frame (intrinsics rescaled when its size is known)."""
        return self.camera.for_image(int(width), int(height)) if self.camera is not None else None

    def missing_sizes(self, classes: Sequence[str]) -> list[str]:
        """Classes without a positive 3D box size (their instances get ``pose_status`` "no_size")."""
        return [c for c in classes if not all(float(v) > 0 for v in (self.objects.get(c, {}).get("size_m") or [0]))]

    def problems(self, classes: Sequence[str]) -> list[str]:
        """Why instances will get no pose, as one line (empty: none); a command warns with it once."""
        missing = self.missing_sizes(classes)
        if self.camera is None and len(missing) == len(classes):
            return ['the model has neither 3D box sizes nor a camera (trained before 6D pose?) and no --camera '
                    'was given: instances get "pose": null, "pose_status": "no_camera"']
        if self.camera is None:
            return ['the model has no camera (no training camera in the checkpoint/export) and no --camera was '
                    'given: instances get "pose": null, "pose_status": "no_camera"']
        if missing:
            return [f"no 3D box size for class(es) {', '.join(missing)} in the model: their instances get "
                    '"pose": null, "pose_status": "no_size"']
        return []

    def solve(self, inst: Mapping[str, Any], classes: Sequence[str], image_wh: tuple[int, int]) -> dict:
        """One image's instances (``select`` output, ORIGINAL pixels) plus ``R (n, 3, 3)``, ``t (n, 3)``,
        ``reproj_px (n,)``, ``pose_status (n,)`` (index into ``POSE_STATUS``)."""
        one = {k: np.asarray(inst[k])[None] for k in ("label", "keypoints", "center", "z_over_f") if k in inst}
        if "keypoints" not in one:
            one["keypoints"] = np.zeros((1, len(one["label"][0]), 0, 2))
        cam = self.camera_for(*image_wh)
        res = solve_instances(one, classes, self.objects, [cam], max_reproj_px=self.max_reproj_px)
        out = {**inst, **{k: v[0] for k, v in res.items()}}
        if "center" in inst:   # the reported centre is the pose's (eval.pose.refine_centers)
            refined = pose_centers(res, [cam], one.get("box", np.asarray(inst["box"])[None]) if "box" in inst else None,
                                   one["label"], class_sizes(classes, self.objects))[0]
            ok = np.isfinite(refined).all(-1)
            out["center"] = np.where(ok[:, None], refined, np.asarray(inst["center"], np.float64))
        return out


def pose_fields(R, t, reproj_px, status: int) -> dict:
    """An instance's pose fields: ``{"pose": {"R": 3x3, "t": [x, y, z]} | None, "center_3d": [x, y, z] |
    None, "reproj_px": float | None, "pose_status": "ok" | why not}`` (metres, OpenCV camera frame,
    object frame = the centre of its 3D box)."""
    name = POSE_STATUS[int(status)] if 0 <= int(status) < len(POSE_STATUS) else "pnp_failed"
    ok = name == "ok"
    t_list = [rounded(v, 6) for v in np.asarray(t).reshape(3)] if ok else None
    return {"pose": {"R": [[rounded(v, 6) for v in row] for row in np.asarray(R).reshape(3, 3)], "t": t_list}
            if ok else None,
            "center_3d": list(t_list) if ok else None, "reproj_px": rounded(reproj_px, 3), "pose_status": name}


def prediction_record(inst: Mapping[str, Any], classes: Sequence[str], **where: Any) -> dict:
    """One image's instances (ORIGINAL pixels, no padding, best first) -> ``{**where, "instances":
    [{"class", "class_id", "score", "box": [x0, y0, x1, y1], "center": [u, v], "keypoints":
    [[u, v, score], ...]}, ...]}``; with pose arrays in ``inst`` (:meth:`PoseSetup.solve`) each
    instance also has :func:`pose_fields` (``pose``, ``center_3d``, ``reproj_px``, ``pose_status``).

    ``inst``: ``label (n,)`` class indices, ``score (n,)``, ``box (n, 4)``, ``center (n, 2)`` and
    optionally ``keypoints (n, K, 2)`` with ``kp_score (n, K)`` (scores 0 when missing). ``where``
    comes first (``image=...`` or ``frame=...``); an image with nothing found has ``"instances": []``.
    """
    rec: dict[str, Any] = dict(where)
    labels = np.asarray(inst.get("label", np.zeros(0)), np.int64).reshape(-1)
    out = []
    for i, c in enumerate(labels):
        kps = np.asarray(inst["keypoints"][i]) if "keypoints" in inst else np.zeros((0, 2))
        ks = np.asarray(inst["kp_score"][i]) if "kp_score" in inst else np.zeros(len(kps))
        out.append({"class": str(classes[int(c)]), "class_id": int(c), "score": rounded(inst["score"][i], 4),
                    "box": [rounded(v) for v in inst["box"][i]], "center": [rounded(v) for v in inst["center"][i]],
                    "keypoints": [[rounded(u), rounded(v), rounded(s, 3)] for (u, v), s in zip(kps, ks)]})
        if "pose_status" in inst:
            out[-1].update(pose_fields(inst["R"][i], inst["t"][i], inst["reproj_px"][i], inst["pose_status"][i]))
            if "depth_from" in inst and out[-1]["pose"] is not None:   # a model with a depth head
                out[-1]["depth_from"] = DEPTH_FROM[int(inst["depth_from"][i])]
    rec["instances"] = out
    return rec
