"""Multi-kernel MMD between sim and real features.

Long et al., "Learning Transferable Features with Deep Adaptation Networks" (DAN), ICML 2015
(https://arxiv.org/abs/1502.02791); Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sim2real.adapt.alignment._checks import check_pair


def pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` squared Euclidean distances, via the Gram trick (one matmul), clamped at 0."""
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


class MMD(nn.Module):
    """Squared MMD (biased V-statistic) with a sum of Gaussian kernels ``exp(-d^2 / (2 sigma_u^2))``.

    Bandwidths follow the median heuristic: ``sigma_u^2 = m_u * median(d^2)`` over all distinct
    pairs of the joint (sim + real) batch, for multipliers ``m_u`` (default 1/4 .. 4, five kernels,
    equal weights as in Transfer-Learning-Library's ``MultipleKernelMaximumMeanDiscrepancy``).
    The median is taken on detached distances, so the bandwidths are constants for the gradient.
    Pass ``sigmas`` to use fixed bandwidths instead.

    Inputs: ``f_s (N_s, D)``, ``f_t (N_t, D)`` (sizes may differ); output: scalar tensor >= 0,
    exactly 0 when both batches are identical.
    Diagnostics: ``last_value`` (float), ``bandwidths`` (list of sigma_u used in the last call).

    Example::

        mmd = MMD()
        loss = task_loss + 1.0 * mmd(model.embed(x_sim), model.embed(x_real))
    """

    def __init__(self, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 sigmas: Sequence[float] | None = None):
        super().__init__()
        if not multipliers and not sigmas:
            raise ValueError("MMD: give at least one bandwidth multiplier or fixed sigma")
        self.multipliers = tuple(float(m) for m in multipliers)
        self.sigmas = None if sigmas is None else tuple(float(s) for s in sigmas)
        self.bandwidths: list[float] = []
        self.last_value = float("nan")

    def diagnostics(self) -> dict[str, float]:
        """Last call's numbers, ready for ``logger.log({f"align/{k}": v ...})``."""
        mid = self.bandwidths[len(self.bandwidths) // 2] if self.bandwidths else float("nan")
        return {"value": self.last_value, "bandwidth_mid": mid}

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        check_pair(f_s, f_t, "MMD")
        z = torch.cat([f_s, f_t]).float()
        ns = f_s.shape[0]
        d2 = pairwise_sq_dists(z, z)
        if self.sigmas is not None:
            sq_sigmas = [s * s for s in self.sigmas]
        else:
            off_diag = d2.detach()[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
            median = float(off_diag.median()) if off_diag.numel() else 0.0
            median = median if median > 1e-12 else 1.0  # all points equal: any bandwidth gives 0
            sq_sigmas = [m * median for m in self.multipliers]
        kernel = sum(torch.exp(-d2 / (2.0 * s2)) for s2 in sq_sigmas)
        k_ss, k_tt, k_st = kernel[:ns, :ns], kernel[ns:, ns:], kernel[:ns, ns:]
        loss = k_ss.mean() + k_tt.mean() - 2.0 * k_st.mean()
        self.bandwidths = [s2 ** 0.5 for s2 in sq_sigmas]
        self.last_value = float(loss.detach())
        return loss
