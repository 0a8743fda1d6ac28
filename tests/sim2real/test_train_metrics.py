"""Metric functions (pure numpy) on hand-checked cases."""

from __future__ import annotations

import math

import numpy as np

from sim2real.eval.metrics import (accuracy, box_diagonal, box_iou, center_errors, confusion_matrix, pck,
                                   perception_metrics)


def test_classification():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    cm = confusion_matrix([0, 1, 2, 2], [0, 1, 1, 2], 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]  # rows = true class
    assert math.isnan(accuracy([], []))


def test_box_iou_and_centre_error():
    p = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9]], float)
    t = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(box_iou(p, t), [1.0, 50 / 150, 0.0, 0.0])
    np.testing.assert_allclose(center_errors([[0, 0], [3, 4]], [[0, 0], [0, 0]]), [0, 5])
    np.testing.assert_allclose(box_diagonal(t[:1]), [math.hypot(10, 10)])


def test_pck_counts_only_visible_keypoints():
    true = np.zeros((1, 3, 2))
    pred = np.array([[[0.4, 0.0], [0.6, 0.0], [50.0, 50.0]]])  # threshold 0.05 * 10 = 0.5
    vis = np.array([[2, 2, 1]])                                  # the far one is occluded: ignored
    assert pck(pred, true, vis, np.array([10.0])) == 0.5
    assert math.isnan(pck(pred, true, np.zeros((1, 3)), np.array([10.0])))


def test_perception_metrics_names():
    true = {"label": np.array([0, 1]), "center": np.zeros((2, 2)), "box": np.array([[0, 0, 10, 10]] * 2, float),
            "keypoints": np.zeros((2, 1, 2)), "kp_vis": np.array([[2], [2]])}
    pred = {"label": np.array([0, 0]), "center": np.array([[1.0, 0], [3.0, 0]]), "box": true["box"],
            "keypoints": np.array([[[0.1, 0]], [[5.0, 0]]])}
    m = perception_metrics(pred, true, 2)
    assert m["acc"] == 0.5 and m["center_err_px_median"] == 2.0 and m["box_iou_mean"] == 1.0
    assert m["pck@0.05"] == 0.5 and m["confusion"] == [[1, 0], [1, 0]] and m["n"] == 2
    assert "center_err_px_median" not in perception_metrics({"label": pred["label"]}, true, 2)
