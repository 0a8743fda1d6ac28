"""Multi-object detection metrics (sim2real.eval.detection, issue 12) on hand-built scenes."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sim2real.eval.detection import (DETECTION_GOAL, DETECTION_METRIC_NAMES, detection_metrics, pr_curves,
                                     reliability)

CLASSES = ["cube", "ball", "cone"]
CUBE, BALL, CONE = range(3)
# Per image: (class, xyxy box[, ignored]).  Several instances of several classes, an empty image
# and one ignored (barely visible) cube.
SCENE = [
    [(CUBE, (10, 10, 50, 50)), (BALL, (100, 100, 140, 160))],
    [(CUBE, (20, 30, 80, 90)), (CUBE, (200, 200, 260, 240)), (CONE, (300, 50, 340, 120))],
    [],
    [(BALL, (50, 60, 90, 100)), (CUBE, (150, 150, 170, 170), True)],
]
EMPTY_SPOT = (400, 400, 440, 440)  # no object anywhere near, in every image


def corners(box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def centre(box) -> np.ndarray:
    return (np.asarray(box[:2], np.float64) + np.asarray(box[2:], np.float64)) / 2


def make_true(scene) -> dict:
    """Padded ground truth (docs/contracts.md "Instances") with the box corners as 4 keypoints."""
    n, m = len(scene), max(1, max(len(objs) for objs in scene))
    t = {"label": np.full((n, m), -1, np.int64), "box": np.zeros((n, m, 4)), "center": np.zeros((n, m, 2)),
         "keypoints": np.zeros((n, m, 4, 2)), "kp_vis": np.zeros((n, m, 4), np.int64),
         "ignore": np.zeros((n, m), bool)}
    for i, objs in enumerate(scene):
        for j, (label, box, *ignored) in enumerate(objs):
            t["label"][i, j], t["box"][i, j], t["center"][i, j] = label, box, centre(box)
            t["keypoints"][i, j], t["kp_vis"][i, j], t["ignore"][i, j] = corners(box), 2, bool(ignored)
    return t


def make_pred(dets, with_box: bool = True) -> dict:
    """Padded predictions from per-image lists of (class, score, box[, centre]), sorted by score."""
    n, p = len(dets), max(len(d) for d in dets)
    out = {"label": np.full((n, p), -1, np.int64), "score": np.zeros((n, p)), "box": np.zeros((n, p, 4)),
           "center": np.zeros((n, p, 2)), "keypoints": np.zeros((n, p, 4, 2))}
    for i, d in enumerate(dets):
        for j, (label, score, box, *c) in enumerate(sorted(d, key=lambda x: -x[1])):
            out["label"][i, j], out["score"][i, j], out["box"][i, j] = label, score, box
            out["center"][i, j] = c[0] if c else centre(box)
            out["keypoints"][i, j] = corners(box)
    if not with_box:
        del out["box"]
    return out


def gt_dets(scene, score: float = 0.9) -> list[list]:
    """The ground truth itself as detections (the ignored instance included)."""
    return [[(label, score, box) for label, box, *_ in objs] for objs in scene]


def test_ground_truth_as_prediction_scores_one():
    m = detection_metrics(make_pred(gt_dets(SCENE)), make_true(SCENE), CLASSES)
    for key in ("ap", "ap50", "ap75", "ar", "ap/cube", "ap50/cube", "ap/ball", "ap/cone", "recall@thr",
                "precision@thr", "acc", "box_iou_mean", "pck@0.05"):
        assert m[key] == pytest.approx(1.0), key
    assert m["fp_per_image"] == 0 and m["dup_per_image"] == 0
    assert m["center_err_px_median"] == 0 and m["center_err_px_mean"] == 0
    assert m["n"] == 4 and m["n_instances"] == 6  # 7 labelled, one ignored
    assert m["confusion"] == [[3, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_boxes_shifted_by_half_their_size_score_low():
    dets = [[(label, 0.9, (x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2, x1 + (x1 - x0) / 2, y1 + (y1 - y0) / 2))
             for label, _, (x0, y0, x1, y1) in d] for d in gt_dets(SCENE)]
    m = detection_metrics(make_pred(dets), make_true(SCENE), CLASSES)
    assert m["ap"] < 0.5 and m["ap50"] < 0.5
    assert m["recall@thr"] == 0


def test_a_class_outside_scored_is_not_scored():
    dets = gt_dets(SCENE)
    dets[2] = [(CONE, 0.95, EMPTY_SPOT)]  # a confident cone where there is nothing
    pred, true = make_pred(dets), make_true(SCENE)
    every = detection_metrics(pred, true, CLASSES)
    assert every["fp_per_image"] == 0.25 and every["ap/cone"] < 1
    m = detection_metrics(pred, true, CLASSES, scored=[CUBE, BALL])
    assert m["fp_per_image"] == 0 and m["precision@thr"] == 1 and m["ap"] == pytest.approx(1)
    assert "ap/cone" not in m and "ap/cube" in m
    assert m["n_instances"] == 5  # the labelled cone is not counted either


def test_detections_on_an_ignored_instance_are_neither_tp_nor_fp():
    true = make_true(SCENE)
    dets = gt_dets(SCENE)
    # The ignored cube, detected above everything else, plus a small box inside it (IoU 0.25 with
    # it, but it lies on it: COCO's crowd rule).
    dets[3] = [(BALL, 0.9, (50, 60, 90, 100)), (CUBE, 0.99, (150, 150, 170, 170)), (CUBE, 0.95, (150, 150, 160, 160))]
    m = detection_metrics(make_pred(dets), true, CLASSES)
    assert m["ap"] == pytest.approx(1) and m["fp_per_image"] == 0 and m["precision@thr"] == 1 and m["recall@thr"] == 1
    assert m["dup_per_image"] == 0.25  # two confident cubes on one labelled cube
    # Not detecting it is no miss either.
    dets[3] = [(BALL, 0.9, (50, 60, 90, 100))]
    m = detection_metrics(make_pred(dets), true, CLASSES)
    assert m["ap"] == pytest.approx(1) and m["ar"] == pytest.approx(1) and m["recall@thr"] == 1
    # Control: the same instance, not ignored, is a missed object.
    true["ignore"][:] = False
    m = detection_metrics(make_pred(dets), true, CLASSES)
    assert m["ap/cube"] < 1 and m["recall@thr"] == pytest.approx(6 / 7)


@pytest.mark.parametrize("slots", [0, 2])
def test_no_predictions_score_zero(slots):
    pred = {"label": np.full((4, slots), -1), "score": np.zeros((4, slots)), "box": np.zeros((4, slots, 4)),
            "center": np.zeros((4, slots, 2))}
    m = detection_metrics(pred, make_true(SCENE), CLASSES)
    assert m["ap"] == 0 and m["ap50"] == 0 and m["ar"] == 0 and m["ap/cube"] == 0
    assert m["recall@thr"] == 0 and m["fp_per_image"] == 0 and m["dup_per_image"] == 0
    assert math.isnan(m["precision@thr"]) and math.isnan(m["acc"]) and math.isnan(m["ece"])


def test_no_ground_truth_and_no_predictions_is_undefined_not_zero():
    pred = make_pred([[(-1, 0.0, (0, 0, 0, 0))]] * 3)
    m = detection_metrics(pred, make_true([[], [], []]), CLASSES)
    for key in ("ap", "ap50", "ap75", "ar", "ap/cube", "ap50/ball", "recall@thr", "precision@thr", "ece"):
        assert math.isnan(m[key]), key
    assert m["fp_per_image"] == 0 and m["dup_per_image"] == 0 and m["n"] == 3 and m["n_instances"] == 0


def test_fp_per_image_counts_unmatched_confident_predictions():
    dets = gt_dets(SCENE)
    dets[0].append((BALL, 0.8, EMPTY_SPOT))
    dets[2].append((CUBE, 0.8, EMPTY_SPOT))
    dets[2].append((CONE, 0.5, (0, 0, 5, 5)))
    dets[3].append((CUBE, 0.1, EMPTY_SPOT))  # below score_thresh: not counted
    m = detection_metrics(make_pred(dets), make_true(SCENE), CLASSES)
    assert m["fp_per_image"] == 0.75
    assert m["precision@thr"] == pytest.approx(6 / 9) and m["recall@thr"] == 1
    assert detection_metrics(make_pred(dets), make_true(SCENE), CLASSES, score_thresh=0.05)["fp_per_image"] == 1.0


def test_dup_per_image_flags_a_second_detection_of_one_object():
    dets = gt_dets(SCENE)
    dets[0].append((CUBE, 0.8, (12, 10, 52, 50)))  # the image-0 cube again (image 1 rightly has two)
    m = detection_metrics(make_pred(dets), make_true(SCENE), CLASSES)
    assert m["dup_per_image"] == 0.25 and m["fp_per_image"] == 0.25
    dets[0][-1] = (CUBE, 0.1, (12, 10, 52, 50))  # unconfident: no duplicate at the threshold
    assert detection_metrics(make_pred(dets), make_true(SCENE), CLASSES)["dup_per_image"] == 0


def test_matched_pairs_hand_computed():
    # Ground-truth slots in the other order than the predictions, so a slot mix-up shows.
    true = make_true([[(BALL, (20, 20, 40, 40)), (CUBE, (0, 0, 10, 10))]])
    pred = make_pred([[(CUBE, 0.9, (1, 0, 11, 10), (6, 5)),      # IoU 90/110, centre 1 px off
                       (CUBE, 0.8, (20, 20, 40, 40), (33, 34))]])  # the ball, called a cube; centre 5 px off
    pred["keypoints"][0] = true["keypoints"][0, ::-1] + [1, 0]  # 1 px: > 0.05 * 14.1 (cube), < 0.05 * 28.3
    m = detection_metrics(pred, true, CLASSES[:2])
    assert m["box_iou_mean"] == pytest.approx((90 / 110 + 1) / 2)
    assert m["center_err_px_median"] == pytest.approx(3) and m["center_err_px_mean"] == pytest.approx(3)
    assert m["acc"] == 0.5 and m["confusion"] == [[1, 0], [1, 0]]
    assert m["pck@0.05"] == 0.5
    assert m["recall@thr"] == 1 and m["precision@thr"] == 1 and m["fp_per_image"] == 0
    # COCO AP is per class: the ball is never found as a ball; the cube's detection (IoU 0.82, ranked
    # first) is a hit at the IoU thresholds 0.5 ... 0.8, 7 of 10.
    assert m["ap50/cube"] == pytest.approx(1) and m["ap/cube"] == pytest.approx(0.7)
    assert m["ap50/ball"] == 0 and m["ap/ball"] == 0
    assert m["ap"] == pytest.approx(0.35) and m["ap50"] == pytest.approx(0.5) and m["ap75"] == pytest.approx(0.5)


def test_matching_takes_the_best_free_ground_truth():
    true = make_true([[(CUBE, (0, 0, 10, 10)), (CUBE, (0, 0, 10, 12))]])
    # The first detection overlaps both (IoU 0.83 and 1): it takes the second, leaving the first free.
    pred = make_pred([[(CUBE, 0.9, (0, 0, 10, 12)), (CUBE, 0.8, (0, 0, 10, 10))]])
    m = detection_metrics(pred, true, CLASSES[:1])
    assert m["box_iou_mean"] == pytest.approx(1) and m["recall@thr"] == 1


def test_centre_only_predictions_match_the_nearest_centre():
    true = make_true([[(CUBE, (0, 0, 10, 10)), (BALL, (20, 20, 40, 40))]])
    pred = make_pred([[(CUBE, 0.9, (0, 0, 0, 0), (6, 5)), (BALL, 0.8, (0, 0, 0, 0), (30, 27)),
                       (BALL, 0.85, (0, 0, 0, 0), (30, 50))]], with_box=False)  # 20 px > half diagonal 14.1
    m = detection_metrics(pred, true, CLASSES[:2])
    assert "ap" not in m and "box_iou_mean" not in m
    assert m["center_err_px_mean"] == pytest.approx(2) and m["acc"] == 1
    assert m["fp_per_image"] == 1 and m["recall@thr"] == 1


def calibration_case(tp_score: float, fp_score: float):
    """12 images with one cube each: 6 TP + 2 FP at ``tp_score`` (75 % right), 1 TP + 3 FP at
    ``fp_score`` (25 % right), and a 0.01 detection below the calibration floor."""
    true = make_true([[(CUBE, (0, 0, 10, 10))]] * 12)
    hit, miss = (0, 0, 10, 10), EMPTY_SPOT
    dets = ([[(CUBE, tp_score, hit)]] * 6 + [[(CUBE, tp_score, miss)]] * 2 + [[(CUBE, fp_score, hit)]]
            + [[(CUBE, fp_score, miss)]] * 3)
    dets[0] = dets[0] + [(CUBE, 0.01, miss)]
    return make_pred(dets), true


def test_ece_is_zero_when_calibrated_and_positive_when_overconfident():
    pred, true = calibration_case(0.75, 0.25)
    assert detection_metrics(pred, true, CLASSES)["ece"] == pytest.approx(0, abs=1e-12)
    table = reliability(pred, true)
    assert len(table["bin_edges"]) == 11 and sum(table["count"]) == 12
    assert table["count"][7] == 8 and table["accuracy"][7] == 0.75 and table["confidence"][2] == 0.25
    assert math.isnan(table["accuracy"][0])
    pred, true = calibration_case(0.95, 0.95)
    assert detection_metrics(pred, true, CLASSES)["ece"] == pytest.approx(0.95 - 7 / 12)


def test_ece_needs_the_right_class():
    pred, true = calibration_case(0.75, 0.25)
    pred["label"][pred["label"] == CUBE] = BALL  # every detection is now of the wrong class
    assert detection_metrics(pred, true, CLASSES)["ece"] == pytest.approx((8 * 0.75 + 4 * 0.25) / 12)


def test_a_scored_class_without_ground_truth_has_nan_ap_and_an_empty_curve():
    scene = [[(label, box) for label, box, *_ in objs if label != CONE] for objs in SCENE]
    pred, true = make_pred(gt_dets(scene)), make_true(scene)
    m = detection_metrics(pred, true, CLASSES)
    assert math.isnan(m["ap/cone"]) and math.isnan(m["ap50/cone"]) and m["ap"] == pytest.approx(1)
    curves = pr_curves(pred, true, CLASSES)
    assert set(curves) == set(CLASSES)
    assert curves["cone"] == {"recall": [], "precision": []}
    assert len(curves["cube"]["recall"]) == 101 and curves["cube"]["precision"] == [1.0] * 101
    assert set(pr_curves(pred, true, CLASSES, scored=[BALL])) == {"ball"}


def test_output_is_json_with_plain_numbers():
    assert set(DETECTION_GOAL) == set(DETECTION_METRIC_NAMES)
    assert set(DETECTION_GOAL.values()) == {"max", "min"}
    for pred, true in [(make_pred(gt_dets(SCENE)), make_true(SCENE)),
                       (make_pred([[(-1, 0.0, (0, 0, 0, 0))]]), make_true([[]]))]:
        m = detection_metrics(pred, true, CLASSES)
        assert set(DETECTION_METRIC_NAMES) <= set(m)
        assert all(type(m[k]) is float for k in DETECTION_METRIC_NAMES)
        assert json.loads(json.dumps(m, allow_nan=True)).keys() == m.keys()
        json.dumps(reliability(pred, true), allow_nan=True)
        json.dumps(pr_curves(pred, true, CLASSES), allow_nan=True)


@pytest.mark.parametrize("y1, hit", [(299, True), (301, False)])  # IoU 100/199 and 100/201
def test_coco_ap50_agrees_with_the_xyxy_box_iou(y1, hit):
    true = make_true([[(CUBE, (100, 100, 200, 200))]])
    m = detection_metrics(make_pred([[(CUBE, 0.9, (100, 100, 200, y1))]]), true, CLASSES[:1])
    assert m["ap50"] == pytest.approx(float(hit)) and m["recall@thr"] == float(hit)
    assert m["ap75"] == 0 and m["box_iou_mean" if hit else "fp_per_image"] == pytest.approx(100 / 199 if hit else 1)


def test_matching_goes_by_score_not_by_slot():
    true = make_true([[(CUBE, (0, 0, 10, 10))]])
    pred = make_pred([[(CUBE, 0.4, (0, 0, 10, 10)), (CUBE, 0.9, (1, 0, 11, 10))]])
    pred = {k: v[:, ::-1] for k, v in pred.items()}  # the weaker detection in the first slot
    m = detection_metrics(pred, true, CLASSES[:1])
    assert m["center_err_px_mean"] == 1 and m["box_iou_mean"] == pytest.approx(90 / 110)
    assert m["fp_per_image"] == 1 and m["dup_per_image"] == 1


def test_ignore_is_optional_and_the_module_is_torch_free():
    true = make_true(SCENE)
    del true["ignore"]
    m = detection_metrics(make_pred(gt_dets(SCENE)), true, CLASSES)
    assert m["n_instances"] == 7 and m["ap"] == pytest.approx(1)
    code = "import sys, sim2real.eval.detection; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
