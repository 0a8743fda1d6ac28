"""On-stream BatchNorm adaptation (AdaBN-style): re-estimate BN statistics from recent frames.

Every ``every`` frames the buffered recent inputs go through the model once with only the
BatchNorm layers in training mode, which moves their running mean/var toward the stream's
statistics by ``momentum``; predictions always run in eval mode with the updated statistics.
Weights never change (no gradients), so a bad stretch of frames can only move statistics, and
slowly.  Torch backend only: an ONNX graph has its BN folded into the convolutions.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BatchNormAdapter:
    def __init__(self, model: nn.Module, momentum: float = 0.01, every: int = 8, buffer: int = 8,
                 forward=None):
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"tta momentum must be in (0, 1], got {momentum}")
        self.model = model
        self.forward = forward or model
        self.layers = batchnorm_layers(model)
        if not self.layers:
            raise ValueError("--tta-bn needs a model with BatchNorm layers; this one has none")
        self.momentum, self.every = float(momentum), max(1, int(every))
        self.recent: deque[torch.Tensor] = deque(maxlen=max(2, int(buffer)))
        self.updates = 0
        self._seen = 0

    def observe(self, x: torch.Tensor) -> bool:
        """Buffer a preprocessed batch; run an update when due. Returns True if stats changed."""
        for row in x.detach():
            self.recent.append(row)
        self._seen += 1
        if self._seen % self.every or len(self.recent) < 2:
            return False
        self.update(torch.stack(list(self.recent)))
        return True

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        saved = [(m.training, m.momentum) for m in self.layers]
        try:
            for m in self.layers:
                m.train()
                m.momentum = self.momentum
            self.forward(batch)
        finally:
            for m, (training, mom) in zip(self.layers, saved):
                m.train(training)
                m.momentum = mom
        self.updates += 1
