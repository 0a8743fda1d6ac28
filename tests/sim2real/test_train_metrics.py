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
    """Padded instances: image 0 holds a class-0 object (found, 1 px off) and a class-1 one (found as
    class 0, 3 px off); image 1 one object (missed) and a false detection far away."""
    box = [0.0, 0.0, 10.0, 10.0]
    box2 = [20.0, 20.0, 30.0, 30.0]
    true = {"label": np.array([[0, 1], [1, -1]]), "center": np.array([[[5, 5], [25, 25]], [[5, 5], [0, 0]]], float),
            "box": np.array([[box, box2], [box, [0] * 4]]), "keypoints": np.zeros((2, 2, 1, 2)),
            "kp_vis": np.array([[[2], [2]], [[2], [0]]]), "ignore": np.zeros((2, 2), bool)}
    true["keypoints"][0, 1] = 20.0
    pred = {"label": np.array([[0, 0, -1], [0, -1, -1]]), "score": np.array([[0.9, 0.8, 0], [0.7, 0, 0]], np.float32),
            "center": np.array([[[6, 5], [28, 25], [0, 0]], [[45, 45], [0, 0], [0, 0]]], float),
            "box": np.array([[box, box2, [0] * 4], [[40, 40, 50, 50], [0] * 4, [0] * 4]], float),
            "keypoints": np.array([[[[0.1, 0]], [[25.0, 20.0]], [[0, 0]]], [[[0, 0]], [[0, 0]], [[0, 0]]]])}
    m = perception_metrics(pred, true, ["a", "b"])
    assert m["acc"] == 0.5 and m["center_err_px_median"] == 2.0 and m["box_iou_mean"] == 1.0
    assert m["pck@0.05"] == 0.5 and m["confusion"] == [[1, 0], [1, 0]] and m["n"] == 2 and m["n_instances"] == 3
    assert m["recall@thr"] == 2 / 3 and m["precision@thr"] == 2 / 3 and m["fp_per_image"] == 0.5
    assert {"ap", "ap50", "ap/a", "ap/b"} <= set(m)
    # Without a centre (or keypoint) output, no centre (or PCK) metric.
    boxes_only = perception_metrics({k: pred[k] for k in ("label", "score", "box")}, true, ["a", "b"])
    assert "center_err_px_median" not in boxes_only and "pck@0.05" not in boxes_only and boxes_only["acc"] == 0.5
    # Only the scored classes: class 1 left out on both sides.
    one = perception_metrics(pred, true, ["a", "b"], scored=[0])
    assert one["n_instances"] == 1 and one["acc"] == 1.0 and "ap/b" not in one
