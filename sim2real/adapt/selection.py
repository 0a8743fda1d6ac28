"""Model selection across adaptation epochs and the negative-transfer check.

Two rules, named in every output so a reader knows what "best" meant:

- ``real_val``: lowest median centre error (original pixels) on the labelled real validation
  split; ties broken by higher mean box IoU.
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
    "real_val": "lowest median centre error on the labelled real validation split (ties: higher box IoU)",
    "label_free": "LABEL-FREE: lowest MMD between sim and real features (no real labels used for selection)",
}
# metric -> "lower" | "higher" is better; the negative-transfer check compares these.
LOCALIZATION_METRICS = {"center_err_px_median": "lower", "box_iou_mean": "higher"}


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def selection_score(rule: str, real_val: dict | None, align_distance: float | None) -> tuple | None:
    """A tuple to minimise, or None when the rule's inputs are missing."""
    if rule == "real_val":
        if not real_val:
            return None
        err = _finite(real_val.get("center_err_px_median"))
        if err is None:
            return None
        iou = _finite(real_val.get("box_iou_mean"))
        return (err, -(iou if iou is not None else 0.0))
    if rule == "label_free":
        d = _finite(align_distance)
        return None if d is None else (d,)
    raise ValueError(f"unknown selection rule {rule!r}; expected one of {sorted(RULE_TEXT)}")


def negative_transfer_warnings(adapted: dict | None, baselines: dict[str, dict | None], name: str = "adapted",
                               split: str = "test") -> list[str]:
    """Messages for every localisation metric where ``adapted`` is worse than a baseline.

    ``adapted`` and each baseline are real metric dicts (``center_err_px_median``, ``box_iou_mean``);
    ``baselines`` maps a label ("source-only", "real-only fine-tune") to its metrics.
    """
    out = []
    if not adapted:
        return out
    for base_name, base in baselines.items():
        if not base:
            continue
        worse = []
        for metric, direction in LOCALIZATION_METRICS.items():
            a, b = _finite(adapted.get(metric)), _finite(base.get(metric))
            if a is None or b is None:
                continue
            if (a > b) if direction == "lower" else (a < b):
                worse.append(f"{metric} {a:.3g} vs {b:.3g}")
        if worse:
            out.append(f"negative transfer: {name} is worse than {base_name} on real {split} "
                       f"({'; '.join(worse)})")
    return out
