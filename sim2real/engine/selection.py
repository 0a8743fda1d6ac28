"""Best-epoch selection and early stopping, shared by sim training and adaptation.

A score is anything ordered: a float (sim training's monitored metric) or a tuple (adaptation's
rule, e.g. error then -IoU). ``None`` and NaN never count as an improvement, so an epoch whose
metric could not be computed never replaces a real best.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

MODES = ("min", "max")


def is_better(value: Any, best: Any, mode: str = "min") -> bool:
    """Whether ``value`` beats ``best`` (``None`` = nothing yet) under ``mode`` ("min" | "max")."""
    if mode not in MODES:
        raise ValueError(f"selection mode must be one of {list(MODES)}, got {mode!r}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


@dataclass
class BestSelector:
    """Tracks the best epoch and decides early stopping (``patience`` epochs without improvement,
    0 = never). ``state`` (e.g. a ``state_dict``) and ``extra`` (e.g. the epoch's metrics) are
    kept for the best epoch only; a state is copied, so later training does not change it, while
    ``extra`` is kept as given.

    The fields are plain values, so a trainer can store them in its checkpoint and rebuild the
    selector on resume (``BestSelector(mode, patience, best_score=..., ...)``).
    """

    mode: str = "min"
    patience: int = 0
    best_score: Any = None
    best_epoch: int | None = None
    best_extra: dict = field(default_factory=dict, repr=False)
    bad_epochs: int = 0
    best_state: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"selection mode must be one of {list(MODES)}, got {self.mode!r}")

    def update(self, epoch: int, score: Any, state: dict | None = None, extra: dict | None = None) -> bool:
        """Record ``epoch``'s ``score``; True when it is the new best."""
        if is_better(score, self.best_score, self.mode):
            self.best_score, self.best_epoch = score, epoch
            if state is not None:
                self.best_state = {k: v.detach().clone() if hasattr(v, "detach") else copy.deepcopy(v)
                                   for k, v in state.items()}
            self.best_extra = extra if extra is not None else {}
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience
