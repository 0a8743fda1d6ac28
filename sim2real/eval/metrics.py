"""Perception metrics in plain numpy, shared by training, evaluation, adaptation and gap reports,
and the one list of their names.

Detection (every object of every class): COCO box AP / AP50 / AP75 / AR through pycocotools, per
class too (``ap50/<class>``), and on the instances matched to a ground-truth object the single-object
metrics of before: class accuracy, centre error, box IoU, corner PCK (``sim2real.eval.detection``).
All coordinates are in the same pixel frame for predictions and targets (evaluation uses ORIGINAL
image pixels).  Boxes are ``xyxy`` with an exclusive end (``x1 = x + w`` of a COCO box).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

# pck / box_diagonal live with the detection metrics (their only scorer); re-exported here.
from sim2real.eval.detection import PCK_ALPHA, box_diagonal, detection_metrics, pck  # noqa: F401

ALL_TASKS = ("cls", "center", "box", "keypoints")
# 6D pose of the matched instances (``sim2real.eval.pose_metrics``; scored with the keypoints task): centre
# and ADD-S errors in cm, the ADD-S < 10 % of the diameter rate, rotation error modulo symmetry, symmetric
# corner error (pixels), the fraction that got a pose and the PnP reprojection error.
POSE_METRIC_NAMES = ("pose_center_err_cm_median", "pose_center_err_cm_mean", "pose_adds_cm_median", "pose_adds_0.1d",
                     "pose_rot_err_deg_median", "corner_err_px_median", "pose_ok_fraction", "pose_reproj_px_median")
POSE_PER_CLASS = ("pose_center_err_cm_median", "pose_rot_err_deg_median", "pose_adds_0.1d",
                  "corner_err_px_median")   # per-class keys ``<metric>/<class>`` of the pose metrics
# Every task metric score() reports, in table order (per-class ``ap50/<class>``, ``ap/<class>`` and
# ``pose_center_err_cm_median/<class>`` come on top). The contract's names (docs/contracts.md) are all of
# them but the two means, which only tables show.
METRIC_NAMES = ("ap", "ap50", "ap75", "ar", "acc", "center_err_px_median", "center_err_px_mean", "box_iou_mean",
                f"pck@{PCK_ALPHA:g}", "ece", "fp_per_image", "dup_per_image") + POSE_METRIC_NAMES
CONTRACT_METRICS = tuple(m for m in METRIC_NAMES if m not in ("center_err_px_mean", "pose_center_err_cm_mean"))
# Which way is better ("max" / "min") and which trained task each metric scores.
METRIC_GOAL = dict(zip(METRIC_NAMES, ("max", "max", "max", "max", "max", "min", "min", "max", "max", "min", "min",
                                      "min", "min", "min", "min", "max", "min", "min", "max", "min")))
METRIC_TASK = dict(zip(METRIC_NAMES, ("box", "box", "box", "box", "cls", "center", "center", "box", "keypoints",
                                      "cls", "cls", "cls") + ("keypoints",) * len(POSE_METRIC_NAMES)))
# Per-dataset bookkeeping in a metrics dict: logged as-is, never turned into a gap.
BOOKKEEPING = ("confusion", "n", "n_instances", "num_corrupt", "num_without_target", "recall@thr", "precision@thr")


def pred_keys(tasks: Sequence[str]) -> set[str]:
    """Prediction arrays that the trained ``tasks`` make meaningful (the others are not scored)."""
    # z_over_f (a depth head's centre depth / focal) belongs to the pose, i.e. the keypoints task
    return ({"label", "score"} | {t for t in ("center", "box", "keypoints") if t in tasks}
            | ({"z_over_f"} if "keypoints" in tasks else set()))


def task_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` without the per-dataset bookkeeping (confusion, counts) and the per-part losses
    (``loss/<part>``: logged with their split; the total ``loss`` stays)."""
    return {k: v for k, v in metrics.items() if k not in BOOKKEEPING and not k.startswith("loss/")}


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean(pred == true)) if true.size else float("nan")


def confusion_matrix(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = number of samples of true class ``t`` predicted as ``p``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def center_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Euclidean distance per sample between (N, 2) point sets."""
    return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(true, np.float64), axis=-1)


def box_iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """IoU per sample of paired (N, 4) xyxy boxes; degenerate boxes give 0."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    ix = np.clip(np.minimum(p[:, 2], t[:, 2]) - np.maximum(p[:, 0], t[:, 0]), 0, None)
    iy = np.clip(np.minimum(p[:, 3], t[:, 3]) - np.maximum(p[:, 1], t[:, 1]), 0, None)
    inter = ix * iy
    area_p = np.clip(p[:, 2] - p[:, 0], 0, None) * np.clip(p[:, 3] - p[:, 1], 0, None)
    area_t = np.clip(t[:, 2] - t[:, 0], 0, None) * np.clip(t[:, 3] - t[:, 1], 0, None)
    union = area_p + area_t - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _nan_stat(fn, values: np.ndarray) -> float:
    return float(fn(values)) if values.size else float("nan")


def perception_metrics(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], classes: Sequence[str],
                       alpha: float = PCK_ALPHA, scored: Sequence[int] | None = None,
                       score_thresh: float = 0.3, return_match: bool = False):
    """The standard metric set of padded instance predictions against padded ground truth
    (docs/contracts.md, "Instances"): COCO AP/AP50/AP75/AR (all and per class), and on matched
    instances ``acc``, ``center_err_px_median``/``mean``, ``box_iou_mean``, ``pck@<alpha>``; counts
    at ``score_thresh`` (``fp_per_image``, ``dup_per_image``, ``recall@thr``, ``precision@thr``),
    ``ece``, ``n``, ``n_instances`` and ``confusion`` (list of lists). ``scored``: the class indices
    the labels cover (default all); ``return_match``: ``(metrics, match (N, P))`` with the matched pairs
    (ground-truth slot per prediction, -1 = unmatched). The pose metrics of the same pairs come from
    ``sim2real.eval.pose_metrics`` (the loop's ``score`` adds them)."""
    return detection_metrics(pred, true, list(classes), scored=None if scored is None else list(scored),
                             score_thresh=score_thresh, pck_alpha=alpha, return_match=return_match)
