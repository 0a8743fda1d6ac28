"""compute_gap: embed sim and real batches with one model, name everything sim/ real/ gap/."""

import numpy as np
import pytest
import torch
from torch import nn

from sim2real.gap import compute_gap, embed_batches


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())

    def embed(self, x):
        return self.conv(x).mean(dim=(2, 3))


def _batches(seed, shift=0.0, n=4):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(8, 3, 12, 16, generator=g) + shift, torch.zeros(8)) for _ in range(n)]


def test_compute_gap_record():
    torch.manual_seed(0)
    net = TinyNet().train()
    rec = compute_gap(net, _batches(1), _batches(2, shift=0.5),
                      sim_metrics={"acc": 0.9, "center_err_px_median": 2.0},
                      real_metrics={"acc": 0.6, "center_err_px_median": 5.0}, return_features=True)
    assert net.training  # mode restored
    assert rec["gap/acc"] == pytest.approx(0.3) and rec["gap/center_err_px_median"] == pytest.approx(3.0)
    assert rec["sim/acc"] == 0.9 and rec["real/acc"] == 0.6
    assert rec["gap/feat_n_sim"] == 32 and rec["gap/feat_n_real"] == 32
    sim_f, real_f = rec.pop("features")
    assert sim_f.shape == (32, 8) and sim_f.dtype == np.float32
    same = compute_gap(net, _batches(1), _batches(3))
    assert rec["gap/feat_mmd"] > 3 * same["gap/feat_mmd"]
    assert rec["gap/feat_frechet"] > 3 * same["gap/feat_frechet"]


def test_embed_batches_limits_and_errors():
    net = TinyNet()
    assert embed_batches(net, _batches(1), max_samples=10).shape == (10, 8)
    assert embed_batches(net, [{"image": torch.rand(2, 3, 8, 8)}]).shape == (2, 8)
    with pytest.raises(ValueError, match="no embed"):
        embed_batches(nn.Linear(2, 2), [torch.rand(2, 2)])
    with pytest.raises(ValueError, match="no batches"):
        embed_batches(net, [])
