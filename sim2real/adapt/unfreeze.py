"""Gradual unfreezing: head first, then the last backbone stage, then earlier ones, by epoch.

Howard & Ruder, "Universal Language Model Fine-tuning" (ULMFiT), ACL 2018: unfreezing from the
top down lets the new head settle before the pretrained features move, which avoids wrecking them
with the large early gradients of a fresh objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class UnfreezeSchedule:
    """``start`` trainable backbone stages at epoch 0 (0 = head only); at each epoch in ``epochs``
    (0-based, the epoch that first trains with them) ``per_step`` more stages, last stages first."""

    stage_names: Sequence[str]
    epochs: Sequence[int] = ()
    per_step: int = 1
    start: int = 0

    def __post_init__(self) -> None:
        self.stage_names = list(self.stage_names)
        self.epochs = sorted(int(e) for e in self.epochs)
        if self.per_step < 1 or self.start < 0:
            raise ValueError(f"unfreeze schedule: per_step must be >= 1 and start >= 0, got {self.per_step}, "
                             f"{self.start}")

    def num_trainable(self, epoch: int) -> int:
        n = self.start + self.per_step * sum(1 for e in self.epochs if e <= epoch)
        return min(n, len(self.stage_names))

    def trainable_stages(self, epoch: int) -> list[str]:
        n = self.num_trainable(epoch)
        return self.stage_names[len(self.stage_names) - n:] if n else []

    def frozen_stages(self, epoch: int) -> list[str]:
        return self.stage_names[:len(self.stage_names) - self.num_trainable(epoch)]

    @property
    def max_trainable(self) -> int:
        return self.num_trainable(max(self.epochs, default=0))

    @property
    def deepest_cut(self) -> int:
        """Index of the first stage that will ever train: features before it can be cached once."""
        return len(self.stage_names) - self.max_trainable

    def apply(self, model, epoch: int) -> list[str]:
        """Freeze/unfreeze ``model`` (a PerceptionModel) for ``epoch``; returns newly trainable stages."""
        before = set(model.frozen_stages)
        model.set_frozen(self.frozen_stages(epoch))
        return [s for s in self.stage_names if s in before and s not in model.frozen_stages]

    def describe(self, epochs: int) -> list[dict]:
        """``[{"epoch", "trainable"}]`` at each change within ``epochs`` epochs (for the run folder)."""
        out, last = [], None
        for e in range(epochs):
            stages = self.trainable_stages(e)
            if stages != last:
                out.append({"epoch": e, "trainable": ["head"] + stages})
                last = stages
        return out
