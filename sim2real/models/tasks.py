"""Which head loss parts train which task, and the loss weights of a set of tasks."""

from __future__ import annotations

from typing import Iterable

from sim2real.models.heads import HeadConfig, loss_weights

# Which loss parts of the heads belong to which task; a task left out of ``tasks`` gets weight 0.
# The per-class centre heatmap is both the class and the centre: "cls" and "center" share it.
TASK_PARTS = {"cls": ("center",), "center": ("center", "offset"), "box": ("box", "giou"),
              "keypoints": ("keypoints", "kp_heatmap", "kp_offset", "depth")}


def task_loss_weights(head: HeadConfig, tasks: Iterable[str]) -> dict[str, float]:
    """Loss weights (head defaults <- ``head.loss_weights``) with the parts of tasks not in
    ``tasks`` at 0, so heads of untrained tasks get no gradient. Unknown task names add nothing
    (a checkpoint may name tasks this version does not know)."""
    on = {p for t in tasks for p in TASK_PARTS.get(t, ())}
    return {k: (v if k in on else 0.0) for k, v in loss_weights(head).items()}
