"""Score a model on a labelled COCO set (``sim2real evaluate``, ``sim2real gap``) through the one loop.

- :func:`evaluate_dataset`: the metrics dict;
- :func:`evaluate_domain`: a :class:`DomainEval` (metrics, per-image predictions and targets in
  ORIGINAL pixels, ``embed`` features) for gap records and the report.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import DataLoader, Subset

from sim2real.data.dataset import CocoDataset, collate
from sim2real.eval.domain import DomainEval, subset_rows
from sim2real.eval.loop import Decoding, EvalBatch, ModelPass, flip_forward, run_batches, score
from sim2real.eval.metrics import ALL_TASKS
from sim2real.models import PerceptionModel


def model_forward(model: PerceptionModel, flip_tta: bool = False) -> Any:
    """The checkpoint's forward on its NCHW pixels; ``flip_tta``: the mirrored frame's maps too
    (``eval.loop.flip_forward``, width = dim 3)."""
    return flip_forward(model, 3) if flip_tta else model


def _coco_pass(model: PerceptionModel, ds: CocoDataset, rows: Optional[np.ndarray], tasks: Sequence[str],
               batch_size: int, device: Any, num_workers: int, embed: bool,
               flip_tta: bool = False) -> tuple[ModelPass, dict, dict]:
    """``(pass, metrics, targets)`` over ``ds`` (or its ``rows``; ``embed``: keep the features;
    ``flip_tta``: merge the mirrored frame's corners, ``eval.flip``).

    The metrics add ``num_corrupt`` (images skipped) and ``num_without_target`` (images with no
    annotation of a model class)."""
    return coco_pass(ds, model_forward(model, flip_tta), model.make_preprocess(), Decoding.of(model, flip=flip_tta),
                     model.classes, tasks, float(model.head_cfg.score_thresh), model.objects, model.camera, rows=rows,
                     batch_size=batch_size, device=device, num_workers=num_workers, embed=embed)


def coco_pass(ds: CocoDataset, forward: Any, preprocess: Any, decoding: Decoding, classes: Sequence[str],
              tasks: Sequence[str], score_thresh: float, objects: dict | None = None, camera: dict | None = None,
              *, rows: np.ndarray | None = None, batch_size: int = 16, device: Any = "cpu", num_workers: int = 0,
              embed: bool = False) -> tuple[ModelPass, dict, dict]:
    """The pass + scoring behind :func:`evaluate_dataset` for any ``forward`` (inputs -> outputs as
    torch tensors) fed by any ``preprocess`` (image -> (input tensor, PreprocessMeta), with an
    ``input_hw``): e.g. an exported model on uint8 frames (``sim2real.deploy``)."""
    ds.preprocess = preprocess
    loader = DataLoader(ds if rows is None else Subset(ds, rows.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate)
    skipped: list[int] = []

    def batches() -> Iterator[EvalBatch]:
        for b in loader:
            skipped.extend(b["skipped"])
            if "image" in b:
                yield EvalBatch(b["image"], b["geom"].numpy(), b["index"].numpy())

    run = run_batches(batches(), forward, decoding, device=device, embed=embed)
    if not len(run):
        raise ValueError(f"{ds.ann_file}: no readable labelled image to evaluate ({len(skipped)} corrupt, "
                         f"{ds.num_without_target} without an object of classes {list(classes)})")
    true = ds.original_targets(run.index)
    m = score(run, true, classes, tasks, ds.scored_classes, score_thresh, objects=objects, camera=camera)
    m.update(num_corrupt=len(skipped), num_without_target=ds.num_without_target)
    return run, m, true


def evaluate_dataset(model: PerceptionModel, ds: CocoDataset, tasks: Sequence[str] = ALL_TASKS,
                     batch_size: int = 16, device: Any = "cpu", num_workers: int = 0, flip_tta: bool = False) -> dict:
    """Metrics of ``model`` (as it is: eval mode is the caller's) on a labelled dataset, its classes
    mapped onto the model's by name: :func:`perception_metrics`' result plus ``num_corrupt`` and
    ``num_without_target``."""
    return _coco_pass(model, ds, None, tasks, batch_size, device, num_workers, embed=False, flip_tta=flip_tta)[1]


def evaluate_domain(model: PerceptionModel, ds: CocoDataset, name: str, tasks: Sequence[str] = ALL_TASKS,
                    max_images: Optional[int] = None, batch_size: int = 16, device: Any = "cpu",
                    num_workers: int = 0, flip_tta: bool = False) -> DomainEval:
    """Score ``model`` (put in eval mode) on (an evenly spaced subset of) the labelled ``ds`` and keep
    the ``embed`` features and per-image predictions of the same forward pass."""
    model.eval()
    rows = subset_rows(len(ds), max_images)
    run, m, true = _coco_pass(model, ds, rows, tasks, batch_size, device, num_workers, embed=True, flip_tta=flip_tta)
    index = run.index
    return DomainEval(name, m, run.embed.astype(np.float32), run.pred, true, lambda r: ds.load(int(index[r])),
                      tuple(tasks), score_thresh=float(model.head_cfg.score_thresh), scored=list(ds.scored_classes),
                      names=[ds.file_names[int(i)] for i in index])
