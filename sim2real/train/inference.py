"""Run a checkpoint on images or a labelled dataset; every output in ORIGINAL image pixels."""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from sim2real.data.dataset import CocoDataset, collate, geometry_of, predictions_to_original
from sim2real.models import PerceptionModel, load_checkpoint, read_checkpoint_meta
from sim2real.train.distributed import resolve_device
from sim2real.train.metrics import perception_metrics
from sim2real.train.trainer import decode_outputs


def load_model(checkpoint: str, device: str = "auto") -> tuple[PerceptionModel, torch.device, dict]:
    """``(model in eval mode on device, device, checkpoint meta)``."""
    dev = resolve_device(device)
    meta = read_checkpoint_meta(checkpoint)
    model = load_checkpoint(checkpoint, map_location=dev)
    return model.eval(), dev, meta


def trained_tasks(meta: dict) -> list[str]:
    """Tasks the checkpoint was trained for (all when it does not say)."""
    tasks = (meta.get("extra", {}).get("train_config") or {}).get("tasks")
    return list(tasks) if tasks else ["cls", "center", "box", "keypoints"]


@torch.no_grad()
def predict_arrays(model: PerceptionModel, images: Iterable[tuple[Any, np.ndarray]], batch_size: int = 16,
                   device: torch.device | str = "cpu") -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
    """``(key, image)`` pairs -> ``(key, prediction)`` with one image's arrays in original pixels."""
    pre = model.make_preprocess()
    keys, tensors, geoms = [], [], []

    def flush():
        x = torch.stack(tensors).to(device)
        out = decode_outputs(model(x))
        out = predictions_to_original(out, np.stack(geoms), model.input_hw)
        for j, key in enumerate(keys):
            yield key, {k: v[j] for k, v in out.items()}
        keys.clear(), tensors.clear(), geoms.clear()

    for key, img in images:
        t, meta = pre(img)
        keys.append(key), tensors.append(t), geoms.append(geometry_of(meta))
        if len(keys) == batch_size:
            yield from flush()
    if keys:
        yield from flush()


def _round(v: float, nd: int = 2) -> float | None:
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def prediction_record(pred: dict[str, np.ndarray], classes: Sequence[str], **where: Any) -> dict:
    """The contract's JSONL record: ``{"image"|"frame", "class", "score", "box", "center",
    "keypoints": [[u, v, score], ...]}`` (original pixels)."""
    rec: dict[str, Any] = dict(where)
    rec["class"] = classes[int(pred["label"])]
    rec["score"] = _round(pred["score"], 4)
    rec["box"] = [_round(v) for v in pred["box"]]
    rec["center"] = [_round(v) for v in pred["center"]]
    kps = pred.get("keypoints", np.zeros((0, 2)))
    ks = pred.get("kp_score", np.zeros(len(kps)))
    rec["keypoints"] = [[_round(u), _round(v), _round(s, 3)] for (u, v), s in zip(kps, ks)]
    return rec


@torch.no_grad()
def evaluate_dataset(model: PerceptionModel, ds: CocoDataset, tasks: Sequence[str] = ("cls", "center", "box", "keypoints"),
                     batch_size: int = 16, device: torch.device | str = "cpu", num_workers: int = 0) -> dict:
    """Metrics of ``model`` on a labelled dataset (its classes mapped onto the model's by name).

    Adds ``num_corrupt`` (images skipped) and ``num_without_target`` (images with no annotation of
    a model class) to :func:`perception_metrics`' result.
    """
    ds.preprocess = model.make_preprocess()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    preds, seen, skipped = [], [], []
    for b in loader:
        skipped += b["skipped"]
        if "image" not in b:
            continue
        out = decode_outputs(model(b["image"].to(device)))
        preds.append(predictions_to_original(out, b["geom"].numpy(), model.input_hw))
        seen.append(b["index"].numpy())
    if not seen:
        raise ValueError(f"{ds.ann_file}: no readable labelled image to evaluate ({len(skipped)} corrupt, "
                         f"{ds.num_without_target} without a target of classes {model.classes})")
    pred = {k: np.concatenate([p[k] for p in preds]) for k in preds[0]}
    keep = {"label"} | {t for t in ("center", "box", "keypoints") if t in tasks}
    m = perception_metrics({k: v for k, v in pred.items() if k in keep}, ds.original_targets(np.concatenate(seen)),
                           len(model.classes))
    m.update(num_corrupt=len(skipped), num_without_target=ds.num_without_target)
    return m
