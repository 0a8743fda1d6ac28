"""Checkpoints: small "modules" that snap onto a shared frozen backbone, or full exports.

File layout (``torch.load(path, weights_only=True)`` reads it): ``{"meta": <JSON string>,
"state": {name: tensor}}``. ``meta`` holds the format, kind ("module" | "full"), backbone
name, weights spec and hash, classes, head config, input size, preprocessing, frozen stages
and the caller's ``extra``.

A module stores the head, the unfrozen backbone stages and any other backbone tensor that
changed since the backbone was built (e.g. BatchNorm statistics re-estimated by AdaBN); the
rest comes from rebuilding the backbone, whose weight hash must match.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import torch

from sim2real.io import atomic_path
from sim2real.models.backbone import Backbone, state_digests
from sim2real.models.perception import PerceptionModel, head_config_from_dict, head_config_to_dict
from sim2real.models.registry import build_backbone
from sim2real.models.safe_load import unreadable_reason

FORMAT = "sim2real-model"
VERSION = 2   # 2: the multi-object detection head (issue 12); 1 = one object per image


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit the backbone it is loaded onto."""


def _changed_backbone_keys(model: PerceptionModel) -> list[str]:
    _, now = state_digests(model.backbone)
    ref = model.backbone.tensor_digests
    return [f"backbone.{k}" for k, d in now.items() if ref.get(k) != d]


def save_checkpoint(path: str | Path, model: PerceptionModel, extra: dict | None = None, full: bool = False) -> Path:
    """Write a module (default) or full checkpoint atomically; ``extra`` must be JSON-able."""
    sd = model.state_dict()
    if full:
        keys = list(sd)
    else:
        keys = list(dict.fromkeys(model.trainable_state_keys() + _changed_backbone_keys(model)))
    meta = {
        "format": FORMAT, "version": VERSION, "kind": "full" if full else "module",
        "backbone": model.backbone.name, "backbone_weights": model.backbone.weights,
        "backbone_hash": model.backbone.weights_hash,
        "classes": list(model.classes), "head": head_config_to_dict(model.head_cfg),
        "input_hw": list(model.input_hw), "preprocess": model.preprocess_cfg,
        "frozen": model.frozen_stages, "extra": extra or {},
        "objects": model.objects, "camera": model.camera,
    }
    if full:  # lets a model loaded from this file still save modules relative to the pretrained weights
        meta["backbone_digests"] = model.backbone.tensor_digests
    try:
        meta_json = json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"checkpoint extra must be JSON-serialisable: {e}") from None
    payload = {"meta": meta_json, "state": {k: sd[k].detach().cpu().clone() for k in keys}}
    path = Path(path)
    write_torch(path, payload)
    return path


def write_torch(path: Path, payload) -> None:
    """``torch.save`` into memory, then the bytes to ``path`` atomically: a full disk is then an
    OSError (ENOSPC, a one-line OutputError from ``atomic_path``), where torch's zip writer on a
    file reports it as an opaque RuntimeError ("unexpected pos")."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(meta, state)`` of a checkpoint file, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise CheckpointError(f"checkpoint {path}: not a readable sim2real checkpoint ({unreadable_reason(e)})") from None
    if not isinstance(payload, dict) or "meta" not in payload or "state" not in payload:
        raise CheckpointError(f"checkpoint {path}: expected keys 'meta' and 'state'")
    try:
        meta = json.loads(payload["meta"])
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint {path}: 'meta' is not a JSON string") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version", 0) < VERSION:
        raise CheckpointError(f"checkpoint {path} was written by an older sim2real whose model found one object "
                              f"per image (checkpoint version {meta.get('version', 0)}); today's model finds every "
                              f"object of every class: retrain it with 'sim2real train'")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint {path}: version {meta.get('version')} is newer than this sim2real "
                              f"supports ({VERSION})")
    return meta, payload["state"]


def read_checkpoint_meta(path: str | Path) -> dict:
    return read_checkpoint(path)[0]


def load_checkpoint(path: str | Path, backbone: Backbone | None = None, map_location: str | torch.device = "cpu"
                    ) -> PerceptionModel:
    """Rebuild the model. A module snaps onto ``backbone`` (shared, e.g. one frozen backbone
    for several task heads) or onto a freshly built one; name and weight hash must match."""
    meta, state = read_checkpoint(path)
    full = meta["kind"] == "full"
    shared = backbone is not None
    if backbone is None:
        # A full checkpoint carries every tensor: no need for the pretrained weights file.
        backbone = build_backbone(meta["backbone"], "none" if full else meta["backbone_weights"])
    elif backbone.name != meta["backbone"]:
        raise CheckpointError(f"checkpoint {path} was trained on backbone {meta['backbone']}, "
                              f"not {backbone.name}")
    if not full and backbone.weights_hash != meta["backbone_hash"]:
        raise CheckpointError(
            f"checkpoint {path} was trained on backbone {meta['backbone']} with weights hash "
            f"{meta['backbone_hash'][:12]}, but this backbone's weights ({backbone.weights}) hash to "
            f"{backbone.weights_hash[:12]}; use the same pretrained weights or a full checkpoint")
    if shared and any(k.startswith("backbone.") for k in state):
        backbone = copy.deepcopy(backbone)  # do not alter a backbone other models share
    model = PerceptionModel(backbone, meta["classes"], head_config_from_dict(meta["head"]), meta["input_hw"],
                            meta.get("preprocess", {}).get("resize", "letterbox"))
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    if unexpected or bad:
        raise CheckpointError(f"checkpoint {path} does not fit backbone {backbone.name}: unexpected "
                              f"{unexpected[:5]}, shape mismatches {bad[:5]}")
    missing = [k for k in own if k not in state and not k.startswith("backbone.")] if not full else \
        [k for k in own if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing[:5]}")
    model.load_state_dict(state, strict=False)
    model.set_objects(meta.get("objects") or {}, meta.get("camera"))
    if full:
        # Keep the original pretrained identity so modules trained later still match.
        model.backbone.weights = meta["backbone_weights"]
        model.backbone.weights_hash = meta["backbone_hash"]
        model.backbone.tensor_digests = dict(meta.get("backbone_digests", {}))
    model.set_frozen(meta.get("frozen", []))
    return model.to(map_location).eval()
