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

from sim2real.data.dataset import meta_of
from sim2real.eval.flip import FLIP_PREFIX, class_corner_orders, merge_mirrored, mirror_instances
from sim2real.eval.instances import DECODED_MAP_KEYS, EVAL_SCORE_THRESH, MAP_KEYS, decode_maps, instances_to_original
from sim2real.eval.metrics import perception_metrics, pred_keys
from sim2real.eval.pose import label_cameras, refine_centers
from sim2real.eval.pose_metrics import pose_metrics

Forward = Callable[[Any], dict]                       # model inputs on the device -> model outputs
LossFn = Callable[[dict, Any], tuple[Any, Mapping[str, Any]]]   # (outputs, targets) -> (total, parts)


@dataclass(frozen=True)
class Decoding:
    """How a model's maps become instances: its input size (the frame ``geom`` maps from), stride,
    instance cap and corner snapping, and the score threshold (low for scoring: AP needs them all).
    ``flip_orders``: per class the mirrored view's candidate corner orders (``eval.flip``): merge the
    corners of the mirrored frame's maps (``flip/<map>`` outputs, :func:`flip_forward`); None: off."""

    input_hw: tuple[int, int]
    stride: int = 16
    max_instances: int = 20
    kp_score_thresh: float = 0.1
    score_thresh: float = EVAL_SCORE_THRESH
    flip_orders: Optional[tuple] = None

    @classmethod
    def of(cls, model: Any, score_thresh: float = EVAL_SCORE_THRESH, flip: bool = False) -> "Decoding":
        orders = class_corner_orders(model.classes, model.objects) if flip else None
        return cls(tuple(int(v) for v in model.input_hw), **model.decode_options(), score_thresh=score_thresh,
                   flip_orders=orders)

    def _decode(self, out: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
        maps = {k: np.asarray(out[prefix + k].float().cpu().numpy()) for k in DECODED_MAP_KEYS if prefix + k in out}
        if prefix and "heatmap" not in maps:
            raise ValueError("flip test-time augmentation: the forward gave no mirrored maps "
                             f"('{FLIP_PREFIX}heatmap'); wrap it with eval.loop.flip_forward")
        return decode_maps(maps, self.stride, self.max_instances, self.score_thresh, self.kp_score_thresh)

    def __call__(self, out: Mapping[str, Any], geom: np.ndarray) -> dict[str, np.ndarray]:
        """Model outputs (torch) + geometry rows -> padded instances in ORIGINAL pixels."""
        pred = self._decode(out)
        if self.flip_orders is not None:
            mirrored = mirror_instances(self._decode(out, FLIP_PREFIX), int(self.input_hw[1]))
            pred = merge_mirrored(pred, mirrored, self.flip_orders)
        return instances_to_original(pred, [meta_of(g, self.input_hw) for g in geom])


def flip_forward(forward: Forward, width_dim: int) -> Forward:
    """``forward`` run on the input and on the input mirrored along ``width_dim`` (3 for NCHW model
    pixels, 2 for an exported model's NHWC frames): the outputs plus the mirrored run's maps under
    ``flip/<map>``, for a :class:`Decoding` with ``flip_orders``."""
    def run(x: Any) -> dict:
        if not isinstance(x, torch.Tensor):
            raise ValueError("flip test-time augmentation needs image inputs, not cached features")
        out = forward(x)
        mirrored = forward(torch.flip(x, dims=[width_dim]))
        return {**out, **{FLIP_PREFIX + k: mirrored[k] for k in MAP_KEYS if k in mirrored}}
    return run


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

    ``pred``: decoded instances in ORIGINAL pixels (``label (N, P)`` -1 = empty, ``score (N, P)``,
    ``center (N, P, 2)``, ``box (N, P, 4)``, ``keypoints (N, P, K, 2)``, ``kp_score``); ``index (N,)``: dataset
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


def forward_batches(batches: Iterable[EvalBatch], forward: Forward, decoding: Optional[Decoding], *,
                    device: Any = "cpu", amp: bool = False, loss: Optional[LossFn] = None,
                    decode: bool = True) -> Iterator[BatchResult]:
    """Run ``forward`` (no grad) on each batch and decode its outputs to instances in ORIGINAL pixels.

    ``decoding``: :class:`Decoding` of the model (``Decoding.of(model)``); ``amp``: float16 autocast
    on CUDA around the forward and the ``loss`` (as in training). A generator: a caller can stream
    (``predict``) or keep everything (:func:`run_batches`).
    """
    for b in batches:
        with torch.no_grad():
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                out = forward(to_device(b.inputs, device))
                total, parts = loss(out, to_device(b.targets, device)) if loss is not None else (None, {})
            pred = decoding(out, b.geom) if decode else None
        yield BatchResult(b, out, pred, total, parts)


def run_batches(batches: Iterable[EvalBatch], forward: Forward, decoding: Optional[Decoding], *, device: Any = "cpu",
                amp: bool = False, loss: Optional[LossFn] = None, embed: bool = True, decode: bool = True,
                on_output: Optional[Callable[[dict], None]] = None) -> ModelPass:
    """One pass over ``batches``: predictions (ORIGINAL pixels), dataset rows, ``embed`` features
    (``embed=True``) and the per-sample mean losses (with ``loss``).

    ``on_output(out)`` sees each batch's raw outputs (e.g. adaptation's alignment-tap features).
    An empty pass (no batch) has ``len() == 0``; the caller says why in its own words.
    """
    total_n, sums = 0, {}
    preds, seen, embeds = [], [], []
    for r in forward_batches(batches, forward, decoding, device=device, amp=amp, loss=loss, decode=decode):
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


def score(run: ModelPass, true: Mapping[str, np.ndarray], classes: Sequence[str], tasks: Sequence[str],
          scored: Optional[Sequence[int]] = None, score_thresh: float = 0.3, *,
          objects: Optional[Mapping[str, dict]] = None, camera: Optional[dict] = None) -> dict:
    """:func:`perception_metrics` of the trained ``tasks``' predictions against ``true`` (ORIGINAL
    pixels, rows as ``run.index``; only the ``scored`` classes, default all), counting detections
    from ``score_thresh`` (the model's reporting threshold), then, with the keypoints task, the pose
    metrics of the same matched pairs (:func:`sim2real.eval.pose_metrics.pose_metrics`; ``objects``
    and ``camera``: the model's ``objects`` and ``camera``), then the pass's mean losses."""
    keep = pred_keys(tasks)
    pred = {k: v for k, v in run.pred.items() if k in keep}
    head = pred
    if "keypoints" in pred and "center" in pred and objects:
        # The centre a model reports is its pose's (see eval.pose.refine_centers), as predict/live do.
        pred = refine_centers(pred, classes, objects, label_cameras(true, camera, len(pred["label"])), score_thresh)
        pred.pop("center_head")
    m, match = perception_metrics(pred, true, classes, scored=scored, score_thresh=score_thresh, return_match=True)
    if "keypoints" in pred:   # PnP on the head's own outputs (the refined centre came from a PnP fit)
        m.update(pose_metrics(head, true, match, classes, objects, camera, scored=scored))
    m.update(run.losses)
    return m
