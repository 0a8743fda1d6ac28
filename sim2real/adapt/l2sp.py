"""L2-SP: keep fine-tuned weights near the starting point instead of near zero.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018 (https://arxiv.org/abs/1802.01483): ``Omega(w) = alpha/2 ||w - w0||^2``
over the transferred weights. With a handful of real labels, plain fine-tuning drifts away from
what was learnt in sim (catastrophic forgetting); pulling towards ``w0`` instead of towards 0
(weight decay) keeps it. Only parameters that currently train contribute, so stages unfrozen later
join the penalty at zero.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class L2SP(nn.Module):
    """``penalty()`` = ``weight / 2 * sum ||p - p_start||^2`` over trainable parameters.

    ``include(name)`` picks the parameters that have a meaningful starting point (default: all;
    a freshly initialised head has none, see Li et al.'s separate ``beta`` term).
    """

    def __init__(self, model: nn.Module, weight: float, include: Callable[[str], bool] | None = None):
        super().__init__()
        self.weight = float(weight)
        self._model = [model]  # a list: do not register the model as a submodule
        include = include or (lambda name: True)
        self.start = {n: p.detach().clone() for n, p in model.named_parameters() if include(n)}

    def squared_distance(self) -> torch.Tensor:
        """``sum ||p - p_start||^2`` over trainable tracked parameters (a tensor with grad)."""
        total = None
        for name, p in self._model[0].named_parameters():
            if not p.requires_grad or name not in self.start:
                continue
            d = (p - self.start[name].to(p.device)).pow(2).sum()
            total = d if total is None else total + d
        if total is None:
            return torch.zeros(())
        return total

    def penalty(self) -> torch.Tensor:
        if self.weight == 0.0:
            return torch.zeros(())
        return 0.5 * self.weight * self.squared_distance()

    def forward(self) -> torch.Tensor:
        return self.penalty()
