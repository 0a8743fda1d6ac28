"""DANN: domain-adversarial training through a gradient-reversal layer.

Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016
(https://arxiv.org/abs/1505.07818).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.adapt.alignment._checks import check_pair


class _GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def grl_coefficient(progress: float, alpha: float = 10.0, lo: float = 0.0, hi: float = 1.0) -> float:
    """Ganin et al.'s schedule ``lambda_p = 2 (hi - lo) / (1 + exp(-alpha p)) - (hi - lo) + lo``.

    With the defaults this is ``2 / (1 + exp(-10 p)) - 1``: 0 at the start (p = 0), -> 1 at the end,
    so the untrained discriminator's noisy gradients do not disturb the features early on.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 * (hi - lo) / (1.0 + math.exp(-alpha * p)) - (hi - lo) + lo


class GradientReverseLayer(nn.Module):
    """Identity forward; multiplies the gradient by ``-coeff`` backward. Shapes: any -> same."""

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GradientReverse.apply(x, self.coeff)


class WarmStartGradientReverseLayer(nn.Module):
    """Gradient reversal whose coefficient follows :func:`grl_coefficient` over ``max_iters`` steps.

    ``progress = iter_num / max_iters``; ``step()`` advances it (``auto_step=True`` advances on
    every training-mode forward). ``coeff`` holds the current lambda for logging.
    """

    def __init__(self, alpha: float = 10.0, lo: float = 0.0, hi: float = 1.0, max_iters: int = 1000,
                 auto_step: bool = False):
        super().__init__()
        if max_iters < 1:
            raise ValueError(f"WarmStartGradientReverseLayer: max_iters must be >= 1, got {max_iters}")
        self.alpha, self.lo, self.hi, self.max_iters = float(alpha), float(lo), float(hi), int(max_iters)
        self.auto_step = auto_step
        self.iter_num = 0

    @property
    def coeff(self) -> float:
        return grl_coefficient(self.iter_num / self.max_iters, self.alpha, self.lo, self.hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _GradientReverse.apply(x, self.coeff)
        if self.auto_step and self.training:
            self.step()
        return out

    def step(self) -> None:
        self.iter_num += 1


class DomainDiscriminator(nn.Sequential):
    """Small MLP ``(N, D) -> (N, 1)`` domain logit (sim = 1, real = 0), as in the DANN paper."""

    def __init__(self, in_features: int, hidden: int = 256, batch_norm: bool = True):
        def block(i: int, o: int) -> list[nn.Module]:
            if batch_norm:
                return [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU()]
            return [nn.Linear(i, o), nn.ReLU(), nn.Dropout(0.5)]

        super().__init__(*block(in_features, hidden), *block(hidden, hidden), nn.Linear(hidden, 1))


class DANN(nn.Module):
    """Domain-adversarial loss: a discriminator tells sim from real through a gradient reversal.

    Minimising this loss trains the discriminator to separate the domains while the reversed
    gradient trains the feature extractor to confuse it. The module owns the discriminator, so
    add ``dann.parameters()`` to the optimizer. The GRL coefficient ramps up with
    ``lambda_p = 2 / (1 + exp(-10 p)) - 1`` over ``max_iters`` training-mode calls.

    Inputs: ``f_s (N_s, D)``, ``f_t (N_t, D)`` with ``D == dim``; output: scalar tensor,
    ``0.5 * (BCE(d(f_s), 1) + BCE(d(f_t), 0))`` (each domain weighted equally).
    Diagnostics: ``last_value``, ``domain_accuracy`` (0.5 = domains indistinguishable),
    ``grl_coeff`` (current lambda).

    Example::

        dann = DANN(dim=1280, max_iters=epochs * steps_per_epoch)
        opt = torch.optim.SGD([*model.parameters(), *dann.parameters()], lr=1e-3)
        loss = task_loss + 1.0 * dann(model.embed(x_sim), model.embed(x_real))
    """

    def __init__(self, dim: int, hidden: int = 256, max_iters: int = 1000, alpha: float = 10.0,
                 batch_norm: bool = True, auto_step: bool = True):
        super().__init__()
        self.discriminator = DomainDiscriminator(dim, hidden, batch_norm=batch_norm)
        self.grl = WarmStartGradientReverseLayer(alpha=alpha, max_iters=max_iters, auto_step=auto_step)
        self.dim = dim
        self.last_value = float("nan")
        self.domain_accuracy = float("nan")

    @property
    def grl_coeff(self) -> float:
        return self.grl.coeff

    def diagnostics(self) -> dict[str, float]:
        """Last call's numbers, ready for ``logger.log({f"align/{k}": v ...})``."""
        return {"value": self.last_value, "domain_accuracy": self.domain_accuracy, "grl_coeff": self.grl_coeff}

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        check_pair(f_s, f_t, "DANN")
        if f_s.shape[1] != self.dim:
            raise ValueError(f"DANN: built for feature width {self.dim}, got {f_s.shape[1]}")
        logits = self.discriminator(self.grl(torch.cat([f_s, f_t]).float())).squeeze(1)
        d_s, d_t = logits[: len(f_s)], logits[len(f_s):]
        loss = 0.5 * (F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
                      + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t)))
        with torch.no_grad():
            acc_s = (d_s > 0).float().mean()
            acc_t = (d_t <= 0).float().mean()
        self.domain_accuracy = float(0.5 * (acc_s + acc_t))
        self.last_value = float(loss.detach())
        return loss
