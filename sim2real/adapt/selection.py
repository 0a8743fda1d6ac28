"""Model selection across adaptation epochs and the negative-transfer check.

Two rules, named in every output so a reader knows what "best" meant:

- ``real_val``: highest box AP50 on the labelled real validation split; ties broken by the higher
  recall at the head's ``score_thresh`` (``recall@thr``: AP50 does not see a threshold, and an
  epoch whose scores fell below it reports fewer objects), then lower median centre error, then
  higher mean box IoU (both over the instances matched at ``score_thresh``, original pixels). AP50 comes first because the matched-instance errors alone
  reward a model that detects only its easiest object (or nothing: then they are undefined).
  When AP50 is undefined (the val frames hold no labelled instance) the score falls back to the
  centre error, and :func:`selection_basis` says which metric decided.
- ``label_free`` (no real labels, k = 0): lowest alignment distance, the squared MMD between
  sim and real features (sim validation images vs unlabelled real frames). It measures how alike
  the domains look to the heads, not accuracy: a proxy, used only because nothing better exists
  without labels.

The best epoch itself is tracked by :class:`sim2real.engine.BestSelector` (mode "min" on
:func:`selection_score`), the same selector sim training uses.
"""

from __future__ import annotations

import math
from typing import Any

RULE_TEXT = {
    "real_val": "highest box AP50 on the labelled real validation split (ties: higher recall at the score "
                "threshold, then lower median centre error, then higher box IoU, on matched instances)",
    "label_free": "LABEL-FREE: lowest MMD between sim and real features (no real labels used for selection)",
}
# metric -> "lower" | "higher" is better; the negative-transfer check compares these.
TRANSFER_METRICS = {"ap50": "higher", "center_err_px_median": "lower", "box_iou_mean": "higher"}
# Defined only when a detection at the score threshold matched a labelled instance.
MATCHED_METRICS = ("center_err_px_median", "box_iou_mean")
# Score tiers of the real_val rule (first element of its tuple): AP50 decided, or the fallback.
_BY_AP50, _BY_CENTER = 0, 1


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def selection_score(rule: str, real_val: dict | None, align_distance: float | None) -> tuple | None:
    """A tuple to minimise, or None when the rule's inputs are missing.

    ``real_val``: ``(0, -ap50, -recall@thr, centre error, -IoU)`` (an undefined recall, centre error
    or IoU sorts last among equal AP50), else ``(1, centre error, -IoU)`` when AP50 is undefined; any AP50-scored epoch
    beats a fallback one. ``label_free``: ``(mmd,)``.
    """
    if rule == "real_val":
        if not real_val:
            return None
        ap50 = _finite(real_val.get("ap50"))
        err = _finite(real_val.get("center_err_px_median"))
        iou = _finite(real_val.get("box_iou_mean"))
        rec = _finite(real_val.get("recall@thr"))
        if ap50 is not None:
            return (_BY_AP50, -ap50, -(rec if rec is not None else 0.0), math.inf if err is None else err,
                    -(iou if iou is not None else 0.0))
        if err is not None:
            return (_BY_CENTER, err, -(iou if iou is not None else 0.0))
        return None
    if rule == "label_free":
        d = _finite(align_distance)
        return None if d is None else (d,)
    raise ValueError(f"unknown selection rule {rule!r}; expected one of {sorted(RULE_TEXT)}")


def selection_basis(rule: str, score: tuple | None) -> str | None:
    """The metric that decided ``score``: ``ap50``, ``center_err_px_median`` (the fallback) or
    ``align_mmd``; None for an unscored epoch."""
    if score is None:
        return None
    if rule == "label_free":
        return "align_mmd"
    return "ap50" if score[0] == _BY_AP50 else "center_err_px_median"


def selection_value(rule: str, score: tuple | None) -> float | None:
    """The deciding metric's value of ``score`` as logged (``selection/score``): AP50, the centre
    error in px, or the MMD."""
    if score is None:
        return None
    if rule == "label_free":
        return score[0]
    return -score[1] if score[0] == _BY_AP50 else score[1]


def negative_transfer_warnings(adapted: dict | None, baselines: dict[str, dict | None], name: str = "adapted",
                               split: str = "test") -> list[str]:
    """Messages for every metric of :data:`TRANSFER_METRICS` where ``adapted`` is worse than a baseline.

    ``adapted`` and each baseline are real metric dicts (``ap50``, ``center_err_px_median``,
    ``box_iou_mean``); ``baselines`` maps a label ("source-only", "real-only fine-tune") to its
    metrics. A metric missing from either side is not compared, except a matched-instance metric
    that the adapted model leaves undefined (NaN: nothing it detected at the score threshold
    matched) where the baseline has a value: that is worse too.
    """
    out = []
    if not adapted:
        return out
    for base_name, base in baselines.items():
        if not base:
            continue
        worse = []
        for metric, direction in TRANSFER_METRICS.items():
            a, b = _finite(adapted.get(metric)), _finite(base.get(metric))
            if b is None:
                continue
            if a is None:
                if metric in MATCHED_METRICS and metric in adapted:
                    worse.append(f"{metric} undefined (no matched instance) vs {b:.3g}")
                continue
            if (a > b) if direction == "lower" else (a < b):
                worse.append(f"{metric} {a:.3g} vs {b:.3g}")
        if worse:
            out.append(f"negative transfer: {name} is worse than {base_name} on real {split} "
                       f"({'; '.join(worse)})")
    return out
