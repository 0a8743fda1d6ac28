"""AdaBN: re-estimate BatchNorm statistics on real data.

Li et al., "Revisiting Batch Normalization for Practical Domain Adaptation", ICLR-W 2017
(https://arxiv.org/abs/1603.04779).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass
class AdaBNStats:
    """What :func:`adapt_bn` did, for the trainer's log."""

    bn_layers: int
    batches: int
    samples: int
    mean_shift: float  # mean |new running_mean - old running_mean| over all BN channels


def _inputs(batch: Any) -> Any:
    # Loaders yield tensors, (x, target) tuples or dicts; the image tensor comes first / is "image".
    if isinstance(batch, dict):
        for key in ("image", "images", "x", "input"):
            if key in batch:
                return batch[key]
        raise ValueError(f"adapt_bn: a dict batch needs an 'image' (or 'x') entry, got keys {sorted(batch)}")
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


@torch.no_grad()
def adapt_bn(model: nn.Module, batches: Iterable[Any],
             forward: Callable[[Any], Any] | None = None) -> AdaBNStats:
    """Reset every BatchNorm's running statistics and recompute them on ``batches`` (real data).

    Uses a cumulative average (``momentum=None``) over all batches, so the result does not depend
    on an exponential-decay constant or on the order of batches. Only BN buffers
    (``running_mean``, ``running_var``, ``num_batches_tracked``) change; weights, biases and every
    other parameter stay bit-identical, and each module's train/eval mode is restored afterwards
    (other layers such as dropout run in eval mode during the pass).

    ``batches``: an iterable of input tensors ``(B, ...)``, ``(x, target)`` tuples or dicts with an
    ``"image"`` key. ``forward``: what to call on each input (default ``model``; e.g.
    ``model.embed`` when the heads need not run). Batches of one sample are skipped for BN layers
    that would see a single value per channel (BatchNorm cannot estimate a variance from it).

    Example::

        stats = adapt_bn(model, (x for x, _ in real_unlabelled_loader))
        logger.log({"adabn/mean_shift": stats.mean_shift})
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        raise ValueError("adapt_bn: the model has no BatchNorm layers with running statistics; "
                         "AdaBN has nothing to adapt (choose another adaptation method)")
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in bns]
    fn = forward or model
    n_batches = n_samples = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: running stat = mean over batches
            m.train()
        for batch in batches:
            x = _inputs(batch)
            if isinstance(x, torch.Tensor) and x.shape[0] < 2:
                continue
            fn(x)
            n_batches += 1
            n_samples += int(x.shape[0]) if isinstance(x, torch.Tensor) else 0
        if n_batches == 0:
            raise ValueError("adapt_bn: got no batch with at least 2 samples; pass real images in "
                             "batches of size >= 2")
    except BaseException:
        # Never leave half-estimated (or freshly reset) statistics behind: restore the old ones.
        for m, (mean, var, count) in zip(bns, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        raise
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        for m, was_training in modes.items():
            m.training = was_training
    shift = torch.cat([(m.running_mean - old_mean).abs().flatten() for m, (old_mean, _, _) in zip(bns, saved)])
    return AdaBNStats(bn_layers=len(bns), batches=n_batches, samples=n_samples, mean_shift=float(shift.mean()))
