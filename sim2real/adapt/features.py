"""Cached frozen-backbone features for adaptation, and the features alignment compares.

Adaptation unfreezes the backbone from the top down, so the stages before the deepest cut the
schedule ever reaches never change (AdaBN aside, which re-keys the cache). Their outputs are
computed once per image (``model.frozen_part(x, cut)``, keyed by
:func:`sim2real.features.cache.feature_key_parts` like sim training's cache; on disk for COCO sets,
in memory for footage) and every step runs only the stages after that cut: a few cheap stride-32
blocks plus the heads. That is what makes adaptation a matter of minutes on two CPU cores.
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sim2real.data.dataset import CocoDataset, geometry_of
from sim2real.features.cache import FeatureStore, build_or_load, cache_key, feature_key_parts, frames_key_parts


def advance(model, feats: dict[str, torch.Tensor], from_cut: int) -> dict[str, torch.Tensor]:
    """Features cached at ``from_cut`` -> the input of :meth:`forward_from_cut` at the model's
    current cut, running the (frozen) stages in between without gradients."""
    cut = model.cut_index
    if cut < from_cut:
        raise ValueError(f"features were cached after stage {from_cut} but the model now trains stage {cut}; "
                         "cache at the deepest cut of the unfreezing schedule")
    if cut == from_cut:
        return feats
    names = model.backbone.stage_names
    taps = {k: v for k, v in feats.items() if k != "cut"}
    if from_cut > 0 and names[from_cut - 1] in model.tap_names:
        taps[names[from_cut - 1]] = feats["cut"]
    with torch.no_grad():
        x = model.backbone(feats["cut"], from_cut, cut, taps, model.tap_names)
    out = {"cut": x}
    out.update({k: taps[k] for k in model.cut_keys() if k != "cut"})
    return out


@dataclass
class MemoryStore:
    """In-memory twin of :class:`FeatureStore` for footage frames (no file to key a disk entry on)."""

    features: dict[str, torch.Tensor]   # name -> (N, ...) float16
    geom: np.ndarray
    valid: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    def batch(self, indices) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices, np.int64))
        return {k: v[idx].float() for k, v in self.features.items()}


class FeatureBank:
    """Frozen-part features of every dataset a session uses, keyed by everything they depend on."""

    def __init__(self, cache_dir: str | Path | None = None, device: torch.device | str = "cpu",
                 progress: bool = False, batch_size: int = 32):
        self.cache_dir = cache_dir
        self.device = torch.device(device)
        self.progress = progress
        self.batch_size = batch_size
        self._memo: dict[str, object] = {}

    @property
    def _compute(self) -> str:
        return f"{self.device.type}-fp32"  # features differ slightly between devices

    def coco(self, ds: CocoDataset, model, cut: int, transform=None, desc: str = "features") -> FeatureStore:
        parts = feature_key_parts(model, ds, transform, cut=cut, compute=self._compute)
        key = cache_key(parts)
        if key in self._memo:
            return self._memo[key]  # type: ignore[return-value]
        d = copy.copy(ds)
        d.preprocess = model.make_preprocess()
        d.augment = transform
        d.corrupt = set()
        was_training = model.training
        model.eval()
        try:
            store = build_or_load(d, functools.partial(model.frozen_part, cut=cut), parts, self.cache_dir,
                                  self.batch_size, self.device, progress=self.progress, desc=desc)
        finally:
            model.train(was_training)
        if store.num_corrupt:
            warnings.warn(f"{ds.ann_file}: {store.num_corrupt} unreadable image(s) skipped", RuntimeWarning,
                          stacklevel=2)
        self._memo[key] = store
        return store

    @torch.no_grad()
    def frames(self, frames: Sequence[np.ndarray], model, cut: int, transform=None,
               source_id: str = "frames") -> MemoryStore:
        parts = frames_key_parts(model, frames, source_id, transform, cut=cut, compute=self._compute)
        key = cache_key(parts)
        if key in self._memo:
            return self._memo[key]  # type: ignore[return-value]
        pre = model.make_preprocess()
        extract = functools.partial(model.frozen_part, cut=cut)
        was_training = model.training
        model.eval()
        chunks: dict[str, list[torch.Tensor]] = {}
        geoms = []
        try:
            for s in range(0, len(frames), self.batch_size):
                xs = []
                for j, img in enumerate(frames[s:s + self.batch_size]):
                    x, meta = pre(transform(img, s + j) if transform else img)
                    xs.append(x)
                    geoms.append(geometry_of(meta))
                out = extract(torch.stack(xs).to(self.device))
                for name, t in out.items():
                    chunks.setdefault(name, []).append(t.float().clamp_(-65504.0, 65504.0).cpu().half())
        finally:
            model.train(was_training)
        store = MemoryStore({k: torch.cat(v) for k, v in chunks.items()}, np.asarray(geoms, np.float64),
                            np.ones(len(frames), bool), {"key": key, "key_parts": json.loads(json.dumps(parts, default=str))})
        self._memo[key] = store
        return store


class AlignTap:
    """The features alignment losses and the label-free rule compare, per image ``(B, D)``.

    ``neck`` (default): the fused map every dense-head branch reads (``head.fuse``), or the global
    head's trunk output, globally pooled. It sits after trainable layers at every stage of the
    unfreezing schedule, so the alignment gradient always reaches parameters, even while the whole
    backbone is frozen and its features come from the cache. ``embed``: the pooled last backbone
    stage (what gap metrics use); it only moves once the last stage trains.
    """

    def __init__(self, model, kind: str = "neck"):
        self.kind = kind
        self.value: torch.Tensor | None = None
        self._handle = None
        if kind == "neck":
            mod = getattr(model.head, "fuse", None) or getattr(model.head, "trunk", None)
            if mod is None:
                warnings.warn(f"align_features=neck: head {type(model.head).__name__} has no 'fuse' or 'trunk' "
                              "module; aligning the backbone embedding instead", RuntimeWarning, stacklevel=2)
                self.kind = "embed"
            else:
                self._handle = mod.register_forward_hook(self._hook)
        elif kind != "embed":
            raise ValueError(f"align_features must be 'neck' or 'embed', got {kind!r}")
        if self.kind == "embed":
            self.dim = model.backbone.num_features
        elif hasattr(model.head, "fuse"):
            self.dim = model.head_cfg.width
        else:
            self.dim = model.head_cfg.hidden

    def _hook(self, module, inputs, output) -> None:
        self.value = output.mean(dim=(2, 3)) if output.dim() == 4 else output

    def __call__(self, outputs: dict) -> torch.Tensor:
        if self.kind == "embed":
            return outputs["embed"]
        if self.value is None:
            raise RuntimeError("AlignTap: no forward pass has run through the head yet")
        return self.value

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
