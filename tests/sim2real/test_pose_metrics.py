"""Pose metrics of the matched instances (issue 13): real arrays, projected with a real camera, no model."""

from __future__ import annotations

import numpy as np
import pytest

from sim2real.eval.detection import match_instances
from sim2real.eval.loop import ModelPass, score
from sim2real.eval.metrics import ALL_TASKS, CONTRACT_METRICS, METRIC_GOAL, METRIC_NAMES, POSE_METRIC_NAMES
from sim2real.eval.pose_metrics import pose_metrics
from sim2real.geometry.pose import project
from sim2real.geometry.symmetry import box_corners, symmetry

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
CUBE = [0.06, 0.06, 0.06]
BOX = [0.08, 0.05, 0.03]
CLASSES = ["cube", "box", "plain"]


def objects(cube_sym="cube", plain_size=CUBE):
    return {"cube": {"size_m": CUBE, "symmetry": symmetry(cube_sym, CUBE).to_dict()},
            "box": {"size_m": BOX, "symmetry": symmetry("none").to_dict()},
            "plain": {"size_m": plain_size, "symmetry": symmetry("none").to_dict()}}


def rot(axis, deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


R0 = rot("x", 25) @ rot("y", -35) @ rot("z", 10)


def instance(R, t, size):
    """Corners (8, 2), centre (2,) and box (4,) xyxy of an object at (R, t), camera K."""
    kp = project(box_corners(size), R, t, K)
    c = project(np.zeros((1, 3)), R, t, K)[0]
    return kp, c, np.concatenate([kp.min(0), kp.max(0)])


def make_set(objs, sizes_known=True, has_pose=True):
    """``objs``: per instance ``(class, R, t)`` of one image each -> (pred, true), exact predictions."""
    n = len(objs)
    true = {"label": np.full((n, 1), -1), "box": np.zeros((n, 1, 4)), "center": np.zeros((n, 1, 2)),
            "keypoints": np.zeros((n, 1, 8, 2)), "kp_vis": np.full((n, 1, 8), 2), "ignore": np.zeros((n, 1), bool),
            "rot": np.zeros((n, 1, 3, 3)), "center_3d": np.zeros((n, 1, 3)), "size": np.zeros((n, 1, 3)),
            "has_pose": np.full((n, 1), has_pose), "camera_K": np.repeat(K[None], n, 0)}
    pred = {"label": np.full((n, 2), -1), "score": np.zeros((n, 2)), "box": np.zeros((n, 2, 4)),
            "center": np.zeros((n, 2, 2)), "keypoints": np.zeros((n, 2, 8, 2)), "kp_score": np.ones((n, 2, 8))}
    for i, (cls, R, t) in enumerate(objs):
        c = CLASSES.index(cls)
        size = objects()[cls]["size_m"]
        kp, ctr, box = instance(R, t, size)
        true["label"][i, 0], true["box"][i, 0], true["center"][i, 0], true["keypoints"][i, 0] = c, box, ctr, kp
        true["rot"][i, 0], true["center_3d"][i, 0] = R, t
        if sizes_known:
            true["size"][i, 0] = size
        pred["label"][i, 0], pred["score"][i, 0] = c, 0.9
        pred["box"][i, 0], pred["center"][i, 0], pred["keypoints"][i, 0] = box, ctr, kp
    return pred, true


def metrics(pred, true, objs=None, **kw):
    match = match_instances(pred, true, score_thresh=0.3)
    return pose_metrics(pred, true, match, CLASSES, objects() if objs is None else objs, **kw)


T0 = np.array([0.03, -0.02, 0.5])


def test_exact_predictions_score_zero():
    pred, true = make_set([("cube", R0, T0), ("box", rot("z", 70) @ R0, np.array([-0.1, 0.05, 0.7]))])
    m = metrics(pred, true)
    for k in ("pose_center_err_cm_median", "pose_center_err_cm_mean", "pose_adds_cm_median",
              "pose_rot_err_deg_median", "corner_err_px_median"):
        assert m[k] == pytest.approx(0.0, abs=1e-4), k
    assert m["pose_reproj_px_median"] == pytest.approx(0.0, abs=1e-4)
    assert m["pose_adds_0.1d"] == 1.0 and m["pose_ok_fraction"] == 1.0
    assert m["pose_center_err_cm_median/cube"] == pytest.approx(0.0, abs=1e-4)
    assert m["pose_center_err_cm_median/box"] == pytest.approx(0.0, abs=1e-4)
    assert m["pose_center_err_cm_median/plain"] is None          # scored but not in the set
    assert set(POSE_METRIC_NAMES) <= set(m)


def test_symmetric_corner_order_is_no_error_only_for_a_symmetric_class():
    S = symmetry("cube", CUBE)
    p = next(k for k in range(S.size) if not np.array_equal(S.perms[k], np.arange(8)))
    pred, true = make_set([("cube", R0, T0)])
    pred["keypoints"][0, 0] = true["keypoints"][0, 0][S.perms[p]]       # the pose R0 @ S, same cube
    m = metrics(pred, true)
    assert m["pose_rot_err_deg_median"] == pytest.approx(0.0, abs=1e-3)
    assert m["corner_err_px_median"] == pytest.approx(0.0, abs=1e-6)
    assert m["pose_center_err_cm_median"] == pytest.approx(0.0, abs=1e-4)
    # The same cube declared without symmetry: that corner order is another pose.
    m = metrics(pred, true, objects(cube_sym="none"))
    assert m["pose_rot_err_deg_median"] > 45.0
    assert m["corner_err_px_median"] > 10.0
    assert m["pose_center_err_cm_median"] == pytest.approx(0.0, abs=1e-4)  # the centre is the same point


@pytest.mark.parametrize("cls, passes", [("cube", 1.0), ("box", 0.0)])
def test_one_cm_along_the_ray_is_one_cm_centre_error(cls, passes):
    ray = T0 / np.linalg.norm(T0)
    pred, true = make_set([(cls, R0, T0)])
    moved, _ = make_set([(cls, R0, T0 + 0.01 * ray)])
    for k in ("keypoints", "center", "box"):
        pred[k] = moved[k]
    m = metrics(pred, true)
    assert m["pose_center_err_cm_median"] == pytest.approx(1.0, abs=1e-3)
    assert m[f"pose_center_err_cm_median/{cls}"] == pytest.approx(1.0, abs=1e-3)
    assert m["pose_adds_cm_median"] == pytest.approx(1.0, abs=1e-3)       # every corner moved by the same 1 cm
    assert m["pose_rot_err_deg_median"] == pytest.approx(0.0, abs=1e-3)
    # 10 % of the diameter: the cube's diagonal is 10.4 cm (1 cm passes), the box's 9.9 cm (1 cm fails)
    assert m["pose_adds_0.1d"] == passes and m[f"pose_adds_0.1d/{cls}"] == passes


def test_failed_pose_counts_against_adds_rate():
    pred, true = make_set([("box", R0, T0), ("plain", R0, T0)], sizes_known=False)
    # "plain" has no size in the labels nor in the model: no pose for it.
    m = metrics(pred, true, objects(plain_size=None))
    assert m["pose_ok_fraction"] == 0.5 and m["pose_adds_0.1d"] == 0.5
    assert m["pose_adds_0.1d/box"] == 1.0 and m["pose_adds_0.1d/plain"] == 0.0      # per class
    assert m["pose_rot_err_deg_median/box"] == pytest.approx(0.0, abs=1e-3) and m["pose_rot_err_deg_median/plain"] is None
    assert m["corner_err_px_median/plain"] == pytest.approx(0.0, abs=1e-6)             # no pose needed
    assert m["pose_center_err_cm_median"] == pytest.approx(0.0, abs=1e-4)  # over the one solved pose
    # Corners that no box fits: PnP's reprojection error rejects the pose; it still counts as a failure.
    pred, true = make_set([("box", R0, T0), ("box", R0, T0)])
    pred["keypoints"][1, 0] = np.random.default_rng(0).uniform(100, 500, (8, 2))
    m = metrics(pred, true)
    assert m["pose_ok_fraction"] == 0.5 and m["pose_adds_0.1d"] == 0.5
    assert m["pose_adds_0.1d/box"] == 0.5                                              # per class too
    assert m["pose_reproj_px_median"] > 0


def test_size_from_labels_else_class():
    pred, true = make_set([("box", R0, T0)])
    wrong = objects()
    wrong["box"] = dict(wrong["box"], size_m=[2 * s for s in BOX])
    assert metrics(pred, true, wrong)["pose_center_err_cm_median"] == pytest.approx(0.0, abs=1e-4)  # own size wins
    pred, true = make_set([("box", R0, T0)], sizes_known=False)      # real labels: no size -> the class's
    assert metrics(pred, true)["pose_center_err_cm_median"] == pytest.approx(0.0, abs=1e-4)
    assert metrics(pred, true, wrong)["pose_center_err_cm_median"] > 10.0  # twice the size: twice as far


def test_unmatched_or_poseless_sets_are_none():
    pred, true = make_set([("cube", R0, T0)])
    far = dict(pred, box=pred["box"] + 300.0)
    m = metrics(far, true)
    assert all(m[k] is None for k in POSE_METRIC_NAMES) and m["pose_center_err_cm_median/cube"] is None
    m = metrics(pred, dict(true, has_pose=np.zeros((1, 1), bool)))
    assert all(m[k] is None for k in POSE_METRIC_NAMES if k != "corner_err_px_median")
    assert m["corner_err_px_median"] == pytest.approx(0.0, abs=1e-6)   # corners need no pose
    m = metrics(pred, {k: v for k, v in true.items() if k not in ("rot", "center_3d", "size", "has_pose")})
    assert m["pose_ok_fraction"] is None and m["corner_err_px_median"] == pytest.approx(0.0, abs=1e-6)
    below = dict(pred, score=np.full_like(pred["score"], 0.1))       # below the model's score threshold
    assert all(v is None for v in metrics(below, true).values())


def test_score_adds_pose_metrics_with_keypoints_and_names_are_listed():
    pred, true = make_set([("cube", R0, T0), ("box", R0, np.array([0.0, 0.0, 0.6]))])
    run = ModelPass(pred, np.arange(2))
    m = score(run, true, CLASSES, ALL_TASKS, scored=[0, 1], objects=objects())
    assert m["pose_center_err_cm_median"] == pytest.approx(0.0, abs=1e-4) and m["pose_ok_fraction"] == 1.0
    assert "pose_center_err_cm_median/cube" in m and "pose_center_err_cm_median/plain" not in m
    assert m["ap50"] == pytest.approx(1.0)
    m = score(run, true, CLASSES, ("cls", "center", "box"), scored=[0, 1], objects=objects())
    assert not set(POSE_METRIC_NAMES) & set(m)                        # keypoints not trained: no pose
    assert set(POSE_METRIC_NAMES) <= set(METRIC_NAMES)
    assert "pose_center_err_cm_mean" not in CONTRACT_METRICS
    assert METRIC_GOAL["pose_adds_0.1d"] == METRIC_GOAL["pose_ok_fraction"] == "max"
    assert all(METRIC_GOAL[k] == "min" for k in POSE_METRIC_NAMES if "err" in k or "reproj" in k or "cm" in k)


def test_pose_numbers_reach_gap_tables_reports_and_evaluate_output():
    from sim2real.commands.evaluate import markdown_summary, pose_line
    from sim2real.gap.naming import gap_metrics
    from sim2real.gap.report import _per_class_html, _table_rows
    from sim2real.gap.run import gap_table

    pred, true = make_set([("cube", R0, T0)])
    sim = metrics(pred, true)
    real = dict(sim, **{"pose_center_err_cm_median": 3.0, "pose_adds_0.1d": 0.25, "pose_ok_fraction": 0.5,
                        "pose_center_err_cm_median/cube": 3.0})
    gaps = gap_metrics(sim, {k: v for k, v in real.items()})
    assert gaps["gap/pose_center_err_cm_median"] == pytest.approx(3.0, abs=1e-4)   # positive = real worse
    assert gaps["gap/pose_adds_0.1d"] == pytest.approx(0.75) and gaps["gap/pose_ok_fraction"] == pytest.approx(0.5)
    assert gaps["gap/pose_center_err_cm_median/cube"] == pytest.approx(3.0, abs=1e-4)
    rec = {**{f"sim/{k}": v for k, v in sim.items()}, **{f"real/{k}": v for k, v in real.items()}, **gaps}
    table = gap_table(rec)
    assert "pose_adds_0.1d" in table and "pose_center_err_cm_median/cube" in table
    rows = [r["metric"] for r in _table_rows(rec, {})]
    assert "pose_center_err_cm_median" in rows and "pose_center_err_cm_median/cube" not in rows  # per-class table's
    assert rows.index("ap") < rows.index("pose_center_err_cm_median") if "ap" in rows else True
    html = "".join(_per_class_html({"sim": {"cube": {"ap": 1.0, "ap50": 1.0, "pose_center_err_cm_median": 0.0},
                                            "box": None}}))
    assert "pose centre err cm" in html and "colspan='3'" in html
    assert "pose centre err" not in "".join(_per_class_html({"sim": {"cube": {"ap": 1.0, "ap50": 1.0}}}))
    line = pose_line(real)
    assert line.startswith("pose (") and "centre err 3 cm" in line and "ADD-S < 0.1 diameter 0.25" in line
    assert pose_line({"ap": 1.0}) is None
    assert pose_line(metrics(dict(pred, score=pred["score"] * 0), true)).startswith("pose: -")
    md = markdown_summary({"checkpoint": "c.pt", "data": "d", "classes": CLASSES,
                           "metrics": {**real, "n": 1, "num_corrupt": 0, "num_without_target": 0}})
    assert "| pose_adds_0.1d | 0.25 |" in md and "| cube | 3 |" in md
