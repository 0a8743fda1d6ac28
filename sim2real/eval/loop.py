"""The one evaluation loop: batches -> forward -> decoded predictions in ORIGINAL pixels -> metrics.

Every stage that scores a model (training's validation, ``sim2real evaluate`` / ``gap`` / ``predict``,
adaptation) feeds its own batches and forward callable through :func:`forward_batches` /
:func:`run_batches` and scores the result with :func:`score`, so the same images give the same
numbers everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

from sim2real.data.dataset import predictions_to_original
from sim2real.eval.metrics import perception_metrics, pred_keys
from sim2real.models.decode import decode_outputs

Forward = Callable[[Any], dict]                       # model inputs on the device -> model outputs
LossFn = Callable[[dict, Any], tuple[Any, Mapping[str, Any]]]   # (outputs, targets) -> (total, parts)


@dataclass
class EvalBatch:
    """One batch for the loop.

    ``inputs``: what ``forward`` takes (pixels ``(B, 3, H, W)`` or a dict of cut features), on any
    device; ``geom``: ``(B, G)`` preprocessing geometry rows (``geometry_of``) that map model-input
    pixels back to original ones; ``index``: ``(B,)`` dataset rows; ``targets``: the loss targets in
    model-input pixels (only when a loss is computed).
    """

    inputs: Any
    geom: np.ndarray
    index: np.ndarray
    targets: Any = None

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class BatchResult:
    """What the loop made of one :class:`EvalBatch`: raw outputs, decoded predictions (ORIGINAL
    pixels; None with ``decode=False``) and, with a loss, the loss and its parts."""

    batch: EvalBatch
    out: dict
    pred: Optional[dict[str, np.ndarray]]
    loss: Any = None
    parts: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ModelPass:
    """Everything one pass over a set kept, rows in batch order.

    ``pred``: decoded predictions in ORIGINAL pixels (``label (N,)``, ``score``, ``probs``,
    ``center (N, 2)``, ``box (N, 4)``, ``keypoints (N, K, 2)``, ``kp_score``); ``index (N,)``: dataset
    rows; ``embed (N, D)`` float32 pooled features (None unless kept); ``losses``: per-sample mean
    of ``loss`` and ``loss/<part>`` (empty without a loss).
    """

    pred: dict[str, np.ndarray]
    index: np.ndarray
    embed: Optional[np.ndarray] = None
    losses: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)


def to_device(x: Any, device: Any) -> Any:
    """A tensor or a dict of tensors on ``device``."""
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def forward_batches(batches: Iterable[EvalBatch], forward: Forward, input_hw: Sequence[int], *,
                    device: Any = "cpu", amp: bool = False, loss: Optional[LossFn] = None,
                    decode: bool = True) -> Iterator[BatchResult]:
    """Run ``forward`` (no grad) on each batch and decode its outputs to ORIGINAL pixels.

    ``input_hw`` is the model's input size (the frame ``geom`` maps from); ``amp``: float16 autocast
    on CUDA around the forward and the ``loss`` (as in training). A generator: a caller can stream
    (``predict``) or keep everything (:func:`run_batches`).
    """
    for b in batches:
        with torch.no_grad():
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                out = forward(to_device(b.inputs, device))
                total, parts = loss(out, to_device(b.targets, device)) if loss is not None else (None, {})
            pred = predictions_to_original(decode_outputs(out), b.geom, input_hw) if decode else None
        yield BatchResult(b, out, pred, total, parts)


def run_batches(batches: Iterable[EvalBatch], forward: Forward, input_hw: Sequence[int], *, device: Any = "cpu",
                amp: bool = False, loss: Optional[LossFn] = None, embed: bool = True, decode: bool = True,
                on_output: Optional[Callable[[dict], None]] = None) -> ModelPass:
    """One pass over ``batches``: predictions (ORIGINAL pixels), dataset rows, ``embed`` features
    (``embed=True``) and the per-sample mean losses (with ``loss``).

    ``on_output(out)`` sees each batch's raw outputs (e.g. adaptation's alignment-tap features).
    An empty pass (no batch) has ``len() == 0``; the caller says why in its own words.
    """
    total_n, sums = 0, {}
    preds, seen, embeds = [], [], []
    for r in forward_batches(batches, forward, input_hw, device=device, amp=amp, loss=loss, decode=decode):
        n = len(r.batch)
        total_n += n
        if loss is not None:
            # Sums of batch means x batch size, in float64 python floats: the mean over samples.
            sums["loss"] = sums.get("loss", 0.0) + float(r.loss) * n
            for k, v in r.parts.items():
                sums[f"loss/{k}"] = sums.get(f"loss/{k}", 0.0) + float(v) * n
        if decode:
            preds.append(r.pred)
        seen.append(r.batch.index)
        if embed:
            embeds.append(r.out["embed"].float().cpu().numpy())
        if on_output is not None:
            on_output(r.out)
    if not seen:
        return ModelPass({}, np.zeros(0, np.int64))
    pred = {k: np.concatenate([p[k] for p in preds]) for k in preds[0]} if preds else {}
    return ModelPass(pred, np.concatenate(seen), np.concatenate(embeds) if embeds else None,
                     {k: v / total_n for k, v in sums.items()})


def score(run: ModelPass, true: Mapping[str, np.ndarray], num_classes: int, tasks: Sequence[str]) -> dict:
    """:func:`perception_metrics` of the trained ``tasks``' predictions against ``true`` (ORIGINAL
    pixels, rows as ``run.index``), then the pass's mean losses (``loss``, ``loss/<part>``)."""
    keep = pred_keys(tasks)
    m = perception_metrics({k: v for k, v in run.pred.items() if k in keep}, true, num_classes)
    m.update(run.losses)
    return m
