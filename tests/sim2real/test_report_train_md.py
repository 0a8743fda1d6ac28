"""The sim training's report.md and compare_scratch.md: overall detection metrics and per-class AP50 lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim2real.config import load_config
from sim2real.train.config import TrainConfig
from sim2real.train.result import TrainResult, comparison_table, train_report

CLASSES = ("cube", "mug", "duck")


def _result(tmp_path: Path, ap50_cube: float) -> TrainResult:
    best = {"ap": 0.41, "ap50": 0.72, "ap75": 0.38, "ar": 0.5, "acc": 0.9, "center_err_px_median": 2.5,
            "box_iou_mean": 0.7, "pck@0.05": 0.6, "ece": 0.04, "fp_per_image": 0.3, "dup_per_image": 0.1,
            "loss": 1.5, "ap50/cube": ap50_cube, "ap/cube": 0.5, "ap50/mug": float("nan"), "ap/mug": float("nan"),
            "n": 10, "confusion": [[1]]}
    return TrainResult(tmp_path, best_epoch=1, best=best, epochs_run=2, stopped_early=False, num_corrupt=0)


def test_train_report_has_overall_and_per_class_ap(tmp_path):
    cfg = load_config(TrainConfig, None, [f"run_dir={tmp_path / 'run'}"])
    md = train_report(cfg, _result(tmp_path, 0.83), CLASSES)
    for k, v in (("ap", "0.41"), ("ap50", "0.72"), ("ap75", "0.38"), ("ar", "0.5"), ("ece", "0.04"),
                 ("fp_per_image", "0.3"), ("dup_per_image", "0.1")):
        assert f"| {k} | {v} |" in md, k
    assert "| cube | 0.83 | 0.5 |" in md      # per class: AP50, AP
    assert "| mug | - | - |" in md            # scored, but no instance in the validation set
    assert "| duck | not labelled | not labelled |" in md
    assert md.index("| ap |") < md.index("| cube |")


def test_compare_scratch_table_has_per_class_rows(tmp_path):
    with pytest.warns(RuntimeWarning, match="NOT better"):  # same ap50 on both: not better
        table = comparison_table(_result(tmp_path, 0.83), _result(tmp_path, 0.25), "ap50")
    assert "| ap50 | 0.72 | 0.72 |" in table and "| ap50/cube | 0.83 | 0.25 |" in table


def test_train_report_lists_pose_metrics_and_per_class_centre_error(tmp_path):
    cfg = load_config(TrainConfig, None, [f"run_dir={tmp_path / 'run'}"])
    r = _result(tmp_path, 0.83)
    r.best.update({"pose_center_err_cm_median": 1.25, "pose_adds_0.1d": 0.8, "pose_ok_fraction": None,
                   "pose_center_err_cm_median/cube": 1.25, "pose_center_err_cm_median/mug": None})
    md = train_report(cfg, r, CLASSES)
    assert "| pose_center_err_cm_median | 1.25 |" in md and "| pose_adds_0.1d | 0.8 |" in md
    assert "| pose_ok_fraction | - |" in md
    assert "| cube | 0.83 | 0.5 | 1.25 |" in md and "| mug | - | - | - |" in md
    assert "| duck | not labelled | not labelled | not labelled |" in md
