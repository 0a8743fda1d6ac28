"""The centre a model reports is its pose's projected box centre when the pose agrees with the box."""

from __future__ import annotations

import numpy as np
import pytest

from sim2real.geometry.camera import Camera
from sim2real.geometry.pose import project
from sim2real.geometry.symmetry import box_corners
from sim2real.eval.pose import refine_centers

K = np.array([[547.7, 0, 338.7], [0, 542.1, 234.5], [0, 0, 1.0]])
SIZE = [0.084] * 3
OBJECTS = {"cube": {"size_m": SIZE, "symmetry": None}}


def _instance(R, t, center_shift=(0.0, 0.0), box=None):
    kp = project(box_corners(SIZE), R, t, K)
    c = project(np.zeros(3), R, t, K)[0]
    b = np.r_[kp.min(0), kp.max(0)] if box is None else np.asarray(box, float)
    return {"label": np.array([[0]]), "score": np.array([[0.9]], np.float32), "keypoints": kp[None, None],
            "center": (c + center_shift)[None, None], "box": b[None, None]}, c


def test_reported_centre_is_the_pose_centre_when_box_agrees():
    R = np.array([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])
    pred, c = _instance(R, np.array([0.03, -0.02, 0.6]), center_shift=(4.0, -3.0))   # the head's peak 5 px off
    out = refine_centers(pred, ["cube"], OBJECTS, [Camera(K, np.zeros(0), 640, 480)], min_score=0.3)
    np.testing.assert_allclose(out["center"][0, 0], c, atol=0.5)          # the 8 corners outvote the centre peak
    np.testing.assert_allclose(out["center_head"][0, 0], c + [4.0, -3.0])
    # a detected box that disagrees with the pose's projected box (object leaving the image): the head's centre
    pred["box"] = np.array([[[0.0, 0.0, 40.0, 40.0]]])
    out = refine_centers(pred, ["cube"], OBJECTS, [Camera(K, np.zeros(0), 640, 480)], min_score=0.3)
    np.testing.assert_allclose(out["center"][0, 0], c + [4.0, -3.0])
    # below the score threshold or without a camera: untouched
    for cams, thr in (([None], 0.3), ([Camera(K, np.zeros(0), 640, 480)], 0.95)):
        out = refine_centers(_instance(R, np.array([0.03, -0.02, 0.6]), (4.0, -3.0))[0], ["cube"], OBJECTS, cams, thr)
        np.testing.assert_allclose(out["center"][0, 0], c + [4.0, -3.0])
