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
