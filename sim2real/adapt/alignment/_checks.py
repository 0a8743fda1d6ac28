"""Input checks shared by the alignment losses."""

from __future__ import annotations

import torch


def check_pair(f_s: torch.Tensor, f_t: torch.Tensor, who: str, min_rows: int = 1) -> None:
    if f_s.ndim != 2 or f_t.ndim != 2:
        raise ValueError(f"{who}: expected 2-D feature batches (N, D), got shapes "
                         f"{tuple(f_s.shape)} and {tuple(f_t.shape)}")
    if f_s.shape[1] != f_t.shape[1]:
        raise ValueError(f"{who}: sim and real features must have the same width D, got "
                         f"{f_s.shape[1]} and {f_t.shape[1]}")
    if f_s.shape[0] < min_rows or f_t.shape[0] < min_rows:
        raise ValueError(f"{who}: needs at least {min_rows} rows per domain, got "
                         f"{f_s.shape[0]} sim and {f_t.shape[0]} real")
