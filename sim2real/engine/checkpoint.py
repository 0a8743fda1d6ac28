"""Training checkpoints that resume exactly: model weights plus optimizer, scheduler, scaler and RNG
states in one atomically written file (``checkpoint.pt``), beside the selected model (``best.pt``).

A training checkpoint is also a regular model checkpoint (``sim2real.models.load_checkpoint`` reads
it), so ``checkpoint.pt`` can be evaluated, exported or adapted like ``best.pt``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from sim2real.io import output_error
from sim2real.models import PerceptionModel, save_checkpoint
from sim2real.models.checkpoint import write_torch
from sim2real.models.safe_load import unreadable_reason

CHECKPOINT = "checkpoint.pt"   # the last epoch, resumable
BEST = "best.pt"               # the selected epoch


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain numbers (``weights_only`` loads it)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(path: Path, model: PerceptionModel, extra: dict, train_state: dict) -> None:
    """A regular model checkpoint (``load_checkpoint`` reads it) plus a ``train_state`` entry with
    optimizer, scheduler, scaler and RNG states, written atomically as one file."""
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".ckpt-") as td:
            tmp = Path(td) / "model.pt"
            save_checkpoint(tmp, model, extra=extra)
            payload = torch.load(tmp, map_location="cpu", weights_only=True)
    except OSError as e:  # disk full or read-only: one line naming the checkpoint (not the temporary file)
        raise output_error(OSError(e.errno, os.strerror(e.errno)) if e.errno else e, path) from None
    payload["train_state"] = train_state
    write_torch(path, payload)  # a full disk is a one-line OutputError, not torch's RuntimeError


def load_training_checkpoint(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"cannot resume: {path} is not a readable training checkpoint ({unreadable_reason(e)})") from None
    if not isinstance(payload, dict) or "train_state" not in payload or "state" not in payload:
        raise ValueError(f"cannot resume: {path} has no training state (a best.pt/model checkpoint cannot "
                         f"resume a run; use the run's {CHECKPOINT})")
    return payload
