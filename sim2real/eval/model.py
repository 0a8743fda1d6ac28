"""A checkpoint ready to evaluate: the model in eval mode on its device, and what it was trained for."""

from __future__ import annotations

import torch

from sim2real.eval.metrics import ALL_TASKS
from sim2real.models import PerceptionModel, load_checkpoint, read_checkpoint_meta, resolve_device


def load_model(checkpoint: str, device: str = "auto") -> tuple[PerceptionModel, torch.device, dict]:
    """``(model in eval mode on device, device, checkpoint meta)``."""
    dev = resolve_device(device)
    meta = read_checkpoint_meta(checkpoint)
    model = load_checkpoint(checkpoint, map_location=dev)
    return model.eval(), dev, meta


def trained_tasks(meta: dict) -> list[str]:
    """Tasks the checkpoint was trained for (all when it does not say)."""
    tasks = (meta.get("extra", {}).get("train_config") or {}).get("tasks")
    return list(tasks) if tasks else list(ALL_TASKS)
