"""CORAL: align the second-order statistics of sim and real features.

Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV-W 2016
(https://arxiv.org/abs/1607.01719).
"""

from __future__ import annotations

import torch
from torch import nn

from sim2real.adapt.alignment._checks import check_pair


def _covariance(f: torch.Tensor) -> torch.Tensor:
    centred = f - f.mean(dim=0, keepdim=True)
    return centred.T @ centred / (f.shape[0] - 1)


class CORAL(nn.Module):
    """Deep CORAL loss ``||C_s - C_t||_F^2 / (4 d^2)`` plus a mean term ``||mu_s - mu_t||^2 / d``.

    The paper aligns covariances only; the mean term (as in Transfer-Learning-Library's
    ``CorrelationAlignmentLoss``) also pulls apart batches that differ by a constant offset,
    which covariances cannot see. ``include_mean=False`` gives the paper's loss exactly.

    Inputs: ``f_s (N_s, D)``, ``f_t (N_t, D)`` with ``N_s, N_t >= 2``; output: scalar tensor.
    Diagnostics (floats, for the trainer's log): ``last_value``, ``last_mean_term``, ``last_cov_term``.

    Example::

        coral = CORAL()
        loss = task_loss + 1.0 * coral(model.embed(x_sim), model.embed(x_real))
    """

    def __init__(self, include_mean: bool = True):
        super().__init__()
        self.include_mean = include_mean
        self.last_value = float("nan")
        self.last_mean_term = float("nan")
        self.last_cov_term = float("nan")

    def diagnostics(self) -> dict[str, float]:
        """Last call's numbers, ready for ``logger.log({f"align/{k}": v ...})``."""
        return {"value": self.last_value, "mean_term": self.last_mean_term, "cov_term": self.last_cov_term}

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        check_pair(f_s, f_t, "CORAL", min_rows=2)
        d = f_s.shape[1]
        f_s, f_t = f_s.float(), f_t.float()
        cov_term = (_covariance(f_s) - _covariance(f_t)).pow(2).sum() / (4 * d * d)
        mean_term = (f_s.mean(0) - f_t.mean(0)).pow(2).sum() / d
        loss = cov_term + mean_term if self.include_mean else cov_term
        self.last_cov_term = float(cov_term.detach())
        self.last_mean_term = float(mean_term.detach())
        self.last_value = float(loss.detach())
        return loss

