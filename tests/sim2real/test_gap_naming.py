"""gap/<metric> naming: positive = real is worse, for both higher- and lower-is-better metrics."""

import pytest

from sim2real.gap import gap_metrics, metric_direction, sim_real_record


def test_signs_positive_when_real_is_worse():
    sim = {"sim/acc": 0.9, "sim/center_err_px_median": 3.0, "sim/pck@0.05": 0.8, "sim/box_iou_mean": 0.7,
           "sim/loss/cls": 0.1, "epoch": 4}
    real = {"real/acc": 0.6, "real/center_err_px_median": 9.0, "real/pck@0.05": 0.5, "real/box_iou_mean": 0.5,
            "real/loss/cls": 0.4, "epoch": 4}
    gaps = gap_metrics(sim, real)
    assert gaps == pytest.approx({"gap/acc": 0.3, "gap/center_err_px_median": 6.0, "gap/pck@0.05": 0.3,
                                  "gap/box_iou_mean": 0.2, "gap/loss/cls": 0.3})
    # Real better than sim -> negative gap, whatever the direction.
    assert gap_metrics({"acc": 0.5, "center_err_px_median": 9.0}, {"acc": 0.7, "center_err_px_median": 2.0}) \
        == pytest.approx({"gap/acc": -0.2, "gap/center_err_px_median": -7.0})


def test_directions_and_unknown_metrics():
    assert metric_direction("real/pck@0.05") == "higher"
    assert metric_direction("kp_err_px") == "lower"
    assert metric_direction("iou_err") == "lower"
    assert metric_direction("latency") is None
    with pytest.warns(UserWarning, match="latency"):
        out = gap_metrics({"latency": 1.0, "acc": 1.0}, {"latency": 2.0, "acc": 0.5})
    assert out == {"gap/acc": 0.5}
    assert gap_metrics({"latency": 1.0}, {"latency": 3.0}, directions={"latency": "lower"}) == {"gap/latency": 2.0}
    with pytest.raises(ValueError, match="higher"):
        gap_metrics({}, {}, directions={"x": "up"})


def test_sim_real_record_is_flat_and_skips_non_numbers():
    rec = sim_real_record({"acc": 0.9, "split": "val", "bad": None}, {"acc": 0.7, "split": "val"})
    assert rec == pytest.approx({"sim/acc": 0.9, "real/acc": 0.7, "gap/acc": 0.2})


def test_detection_metrics_and_per_class_keys_follow_metric_goal():
    from sim2real.eval.metrics import CONTRACT_METRICS, METRIC_GOAL

    # Every contract metric has a direction, and it is METRIC_GOAL's (ap50, ar, ece, fp_per_image ...).
    for m in CONTRACT_METRICS:
        assert metric_direction(m) == ("higher" if METRIC_GOAL[m] == "max" else "lower"), m
        assert metric_direction(f"real/{m}") == metric_direction(m), m
    # A per-class key takes its metric's direction, whatever the class is called.
    assert metric_direction("ap50/cube") == "higher"
    assert metric_direction("ap/error_box") == "higher" and metric_direction("sim/ap50/loss_marker") == "higher"
    sim = {"ap": 0.6, "ap50": 0.9, "ap75": 0.5, "ar": 0.7, "ece": 0.05, "fp_per_image": 0.2, "dup_per_image": 0.0,
           "ap50/cube": 0.8, "ap/error_box": 0.4}
    real = {"ap": 0.3, "ap50": 0.5, "ap75": 0.2, "ar": 0.4, "ece": 0.25, "fp_per_image": 1.2, "dup_per_image": 0.5,
            "ap50/cube": 0.3, "ap/error_box": 0.1}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unknown direction" for any of them
        gaps = gap_metrics(sim, real)
    # Real is worse on every one of them: every gap is positive.
    assert gaps == pytest.approx({"gap/ap": 0.3, "gap/ap50": 0.4, "gap/ap75": 0.3, "gap/ar": 0.3, "gap/ece": 0.2,
                                  "gap/fp_per_image": 1.0, "gap/dup_per_image": 0.5, "gap/ap50/cube": 0.5,
                                  "gap/ap/error_box": 0.3})
