"""Which torch device a run uses (``device: auto | cpu | cuda`` in every stage config)."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` for ``cuda`` (or ``auto`` with a GPU present), else ``cpu``."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device=cuda but no CUDA device is available (use device=cpu or auto)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
