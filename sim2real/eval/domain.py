"""One model scored on one labelled set, as the gap record and the report use it (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from sim2real.eval.metrics import ALL_TASKS


@dataclass
class DomainEval:
    """One model on one labelled set: what the gap record and the report need.

    ``rows`` index the evaluated images in ``true``/``pred``/``features`` order; ``load(row)``
    returns that image as stored (uint8 RGB or gray), or None if it cannot be read. ``pred`` and
    ``true`` are padded instance arrays (docs/contracts.md, "Instances"). ``score_thresh``: the
    model's reporting threshold (the report's frames and the per-image records show the detections
    from it); ``scored``: the class indices the labels define (None = all; see :meth:`scored_classes`);
    ``names``: per row, the image's file name (None = unknown: records name the row).
    """

    name: str                                  # "sim" / "real"
    metrics: dict                              # perception_metrics (+ loss, counts), incl. confusion
    features: np.ndarray                       # (N, D) float32 pooled embeddings
    pred: dict[str, np.ndarray]                # decoded outputs, ORIGINAL pixels
    true: dict[str, np.ndarray]                # targets, ORIGINAL pixels
    load: Callable[[int], Optional[np.ndarray]]
    tasks: Sequence[str] = ALL_TASKS
    score_thresh: float = 0.3
    scored: Optional[Sequence[int]] = None
    names: Optional[Sequence[str]] = None

    def __len__(self) -> int:
        return len(self.features)

    def scored_classes(self, classes: Sequence[str]) -> list[int]:
        """The class indices the labels define: ``scored`` when given, else those with a per-class
        ``ap50/<class>`` metric (only a scored class has one), else every class."""
        if self.scored is not None:
            return sorted(int(c) for c in self.scored)
        found = [i for i, c in enumerate(classes) if f"ap50/{c}" in self.metrics]
        return found or list(range(len(classes)))


def subset_rows(n: int, max_images: Optional[int]) -> np.ndarray:
    """At most ``max_images`` of ``range(n)``, evenly spaced (a video's frames span the whole clip;
    the same rows every call, so per-epoch values are comparable)."""
    if max_images is None or max_images <= 0 or n <= max_images:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_images).round().astype(np.int64))
