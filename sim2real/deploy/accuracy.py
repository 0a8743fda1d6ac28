"""Accuracy of a deployed model (any backend, uint8 frames through ``backend.prepare``) on a labelled
COCO set, through the one evaluation loop (:func:`sim2real.eval.dataset.coco_pass`): the numbers
``sim2real evaluate`` reports for the checkpoint, here for an exported / int8 model, and the guard
``sim2real export --quantize`` applies to int8 (:func:`judge_int8`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sim2real.deploy.backends import InferenceBackend
from sim2real.eval.flip import class_corner_orders
from sim2real.eval.loop import Decoding, flip_forward
from sim2real.eval.metrics import ALL_TASKS

#: The metrics the int8 guard compares (names of ``perception_metrics``).
CENTER_ERR, BOX_IOU = "center_err_px_median", "box_iou_mean"


class _FramePreprocess:
    """``CocoDataset.preprocess`` for a backend: image -> (uint8 (H, W, C) tensor, meta)."""

    def __init__(self, backend: InferenceBackend):
        self.backend, self.input_hw = backend, tuple(backend.input_hw)

    def __call__(self, img: np.ndarray):
        x, meta = self.backend.prepare(img)
        return torch.from_numpy(x), meta


def backend_forward(backend: InferenceBackend, flip_tta: bool = False):
    """The backend as the evaluation loop's forward (torch in and out) on its NHWC uint8 frames;
    ``flip_tta``: the mirrored frame's maps too (``eval.loop.flip_forward``, width = dim 2)."""
    def forward(x: torch.Tensor) -> dict:
        return {k: torch.from_numpy(v) for k, v in backend(x.numpy()).items()}
    return flip_forward(forward, 2) if flip_tta else forward


def evaluate_backend(backend: InferenceBackend, ds, tasks: Sequence[str] = ALL_TASKS, batch_size: int = 8,
                     flip_tta: bool = False) -> dict:
    """Metrics of ``backend`` on the labelled ``ds`` (``CocoDataset`` with the backend's classes);
    ``flip_tta``: merge the mirrored frame's corners (``eval.flip``; the frames are NHWC)."""
    from sim2real.eval.dataset import coco_pass

    orders = class_corner_orders(backend.classes, backend.objects) if flip_tta else None
    decoding = Decoding(tuple(backend.input_hw), **backend.decode_options, flip_orders=orders)
    _, metrics, _ = coco_pass(ds, backend_forward(backend, flip_tta), _FramePreprocess(backend), decoding, backend.classes, tasks,
                              backend.score_thresh, backend.objects, backend.camera, batch_size=batch_size)
    return metrics


def labelled_set(path: str | Path, image_root: str | Path | None, backend: InferenceBackend):
    """A ``CocoDataset`` (dataset folder with annotations.json or a COCO .json) for the backend's
    classes and keypoints (as ``sim2real evaluate`` opens it for a checkpoint)."""
    from sim2real.data.dataset import CocoDataset

    return CocoDataset(path, image_root=image_root, classes=list(backend.classes),
                       num_keypoints=int(backend.meta.get("num_keypoints", 0)))


@dataclass
class Int8Guard:
    """How far int8 may move the labelled accuracy: median centre error up by at most
    ``max_center_err_px`` px, mean box IoU down by at most ``max_iou_drop``."""

    max_center_err_px: float = 1.0
    max_iou_drop: float = 0.02


def judge_int8(fp32: dict, int8: dict, guard: Int8Guard) -> tuple[dict, list[str]]:
    """``(deltas, problems)``: the change of the guarded metrics and one line per bound exceeded
    (a metric int8 loses entirely, e.g. no matched detection left, is a problem too)."""
    deltas, problems = {}, []
    for key, bound, sign, unit in ((CENTER_ERR, guard.max_center_err_px, 1.0, " px"),
                                   (BOX_IOU, guard.max_iou_drop, -1.0, "")):
        a, b = fp32.get(key), int8.get(key)
        ok_a = isinstance(a, (int, float)) and np.isfinite(a)
        ok_b = isinstance(b, (int, float)) and np.isfinite(b)
        if not ok_a:
            deltas[key] = None   # fp32 has nothing to compare with (no matched detection)
            continue
        if not ok_b:
            deltas[key] = None
            problems.append(f"{key}: fp32 {a:.4g}, int8 has none (no matched detection)")
            continue
        d = float(b) - float(a)
        deltas[key] = d
        if sign * d > bound:
            problems.append(f"{key} {a:.4g} -> {b:.4g} ({d:+.4g}{unit}; allowed {'+' if sign > 0 else '-'}{bound:g}{unit})")
    return deltas, problems
