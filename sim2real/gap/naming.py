"""Gap metric names: ``gap/<metric>`` with the sign chosen so that positive = real is worse.

Task metrics (from evaluating one model on a sim and on a real set):

- higher-is-better metrics (``acc``, ``box_iou_mean``, ``pck@0.05``, ``map``, ``f1`` ...):
  ``gap/<m> = sim/<m> - real/<m>``;
- lower-is-better metrics (``center_err_px_median``, ``loss/<name>``, ``rmse`` ...):
  ``gap/<m> = real/<m> - sim/<m>``.

The direction of the standard metric set comes from ``sim2real.eval.metrics.METRIC_GOAL`` (``ap``,
``ap50``, ``ap75``, ``ar`` higher; ``ece``, ``fp_per_image``, ``dup_per_image`` lower ...), and a
per-class key ``<metric>/<class>`` (``ap50/cube``) takes its metric's direction, whatever the class
is called. Other names are read from their tokens (``HIGHER_TOKENS`` / ``LOWER_TOKENS``; an error
token wins, e.g. ``iou_err`` is lower-is-better; ``loss/<part>`` is a loss); pass ``directions``
for anything else.

Feature-space distances between the sim and real embeddings (>= 0, larger = further apart):
``gap/feat_mmd``, ``gap/feat_coral``, ``gap/feat_frechet``, ``gap/feat_pad`` (see
:mod:`sim2real.gap.distances`).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Mapping

HIGHER_TOKENS = frozenset({"acc", "accuracy", "iou", "miou", "pck", "map", "ap", "f1", "precision",
                           "recall", "auc", "top1", "top5"})
LOWER_TOKENS = frozenset({"err", "error", "loss", "rmse", "mae", "mse", "nll", "dist", "distance"})
_NOT_METRICS = frozenset({"step", "epoch", "time", "n", "count", "num_images", "split"})
FEATURE_PREFIX = "gap/feat_"


def _strip(name: str) -> str:
    for prefix in ("sim/", "real/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def metric_direction(name: str) -> str | None:
    """``"higher"`` / ``"lower"`` is better for a metric name, or None when the name does not say."""
    from sim2real.eval.metrics import METRIC_GOAL  # numpy only

    name = _strip(name)
    head = name.split("/", 1)[0]
    for key in (name, head):  # "ap50" and the per-class "ap50/<class>"
        if key in METRIC_GOAL:
            return "higher" if METRIC_GOAL[key] == "max" else "lower"
    if head == "loss":
        return "lower"
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    if tokens & LOWER_TOKENS:
        return "lower"
    if tokens & HIGHER_TOKENS:
        return "higher"
    return None


def finite_number(v: Any) -> float | None:
    """A finite float from a python/numpy/torch scalar, else None (bools, NaN, inf, non-numbers)."""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def gap_metrics(sim: Mapping[str, Any], real: Mapping[str, Any],
                directions: Mapping[str, str] | None = None) -> dict[str, float]:
    """``{"gap/<metric>": value}`` for every numeric metric present in both ``sim`` and ``real``.

    Keys may carry ``sim/`` / ``real/`` prefixes (stripped). ``directions`` maps a metric name to
    ``"higher"`` or ``"lower"`` (is better) and overrides the name rules. Metrics whose direction
    is unknown are skipped with one warning naming them; bookkeeping keys (step, epoch, time,
    n ...) are ignored.
    """
    directions = dict(directions or {})
    bad = {k: v for k, v in directions.items() if v not in ("higher", "lower")}
    if bad:
        raise ValueError(f"gap_metrics: directions must be 'higher' or 'lower', got {bad}")
    sim_vals = {_strip(k): finite_number(v) for k, v in sim.items()}
    real_vals = {_strip(k): finite_number(v) for k, v in real.items()}
    out: dict[str, float] = {}
    unknown = []
    for name, s in sim_vals.items():
        r = real_vals.get(name)
        if s is None or r is None or name in _NOT_METRICS or name.startswith("gap/"):
            continue
        direction = directions.get(name) or metric_direction(name)
        if direction is None:
            unknown.append(name)
            continue
        out[f"gap/{name}"] = s - r if direction == "higher" else r - s
    if unknown:
        warnings.warn(f"gap_metrics: cannot tell whether higher or lower is better for {sorted(unknown)}; "
                      "skipped (pass directions={name: 'higher'|'lower'})", stacklevel=2)
    return out


def sim_real_record(sim: Mapping[str, Any], real: Mapping[str, Any],
                    directions: Mapping[str, str] | None = None) -> dict[str, float]:
    """One flat record ``sim/<m>``, ``real/<m>`` and ``gap/<m>``, ready for ``logger.log``."""
    record: dict[str, float] = {}
    for prefix, values in (("sim/", sim), ("real/", real)):
        for k, v in values.items():
            num = finite_number(v)
            if num is not None and _strip(k) not in _NOT_METRICS:
                record[prefix + _strip(k)] = num
    record.update(gap_metrics(sim, real, directions))
    return record
