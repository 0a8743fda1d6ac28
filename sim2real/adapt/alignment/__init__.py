"""Feature-alignment losses for sim-to-real adaptation, one per file (Transfer-Learning-Library style).

Losses are ``nn.Module``s called as ``loss(f_s, f_t)`` on ``(N, D)`` sim and real features
(``PerceptionModel.embed``); each keeps float diagnostics as attributes, and ``diagnostics()``
returns them as a dict for the trainer's log:

- ``coral``: :class:`CORAL` (Sun & Saenko 2016): ``last_value``, ``last_mean_term``, ``last_cov_term``
- ``mmd``: :class:`MMD`, multi-kernel (Long et al. 2015): ``last_value``, ``bandwidths``
- ``dann``: :class:`DANN` with gradient reversal (Ganin et al. 2016): ``last_value``,
  ``domain_accuracy``, ``grl_coeff``

AdaBN (Li et al. 2017) is a procedure, not a loss: :func:`adapt_bn`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sim2real.adapt.alignment.adabn import AdaBNStats, adapt_bn
from sim2real.adapt.alignment.coral import CORAL
from sim2real.adapt.alignment.dann import (DANN, DomainDiscriminator, GradientReverseLayer,
                                           WarmStartGradientReverseLayer, grl_coefficient)
from sim2real.adapt.alignment.mmd import MMD

ALIGNMENT_LOSSES = ("coral", "mmd", "dann")

__all__ = ["ALIGNMENT_LOSSES", "AdaBNStats", "CORAL", "DANN", "DomainDiscriminator", "GradientReverseLayer",
           "MMD", "WarmStartGradientReverseLayer", "adapt_bn", "build_alignment", "grl_coefficient"]


def build_alignment(name: str, dim: int, **kw: Any) -> nn.Module:
    """Alignment loss by name (``coral``, ``mmd``, ``dann``) for ``dim``-wide features.

    ``kw`` goes to the class (e.g. ``max_iters`` / ``hidden`` for DANN, ``multipliers`` for MMD).
    ``adabn`` is not a loss: call :func:`adapt_bn` instead.
    """
    key = name.lower()
    if key == "adabn":
        raise ValueError("build_alignment: 'adabn' is not a loss; call "
                         "sim2real.adapt.alignment.adapt_bn(model, real_batches) instead")
    try:
        if key == "coral":
            return CORAL(**kw)
        if key == "mmd":
            return MMD(**kw)
        if key == "dann":
            return DANN(dim, **kw)
    except TypeError as e:
        raise ValueError(f"build_alignment: bad options for '{name}': {e}") from None
    raise ValueError(f"build_alignment: unknown alignment '{name}'; expected one of {list(ALIGNMENT_LOSSES)}")
