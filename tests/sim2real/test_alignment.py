"""Alignment losses (CORAL, MMD, DANN), gradient reversal and AdaBN on tiny feature batches."""

import math

import pytest
import torch
from torch import nn

from sim2real.adapt.alignment import (CORAL, DANN, MMD, GradientReverseLayer, WarmStartGradientReverseLayer,
                                      adapt_bn, build_alignment, grl_coefficient)

D = 16


def _feats(seed: int, n: int = 64, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g) * scale + shift


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ["coral", "mmd", "dann"])
def test_loss_shapes_and_gradients_reach_both_inputs(name):
    loss_fn = build_alignment(name, D)
    if name == "dann":
        loss_fn.grl.iter_num = loss_fn.grl.max_iters // 2  # lambda = 0 at the very start
    f_s = _feats(1).requires_grad_()
    f_t = _feats(2, n=48, shift=1.0).requires_grad_()
    loss = loss_fn(f_s, f_t)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for f in (f_s, f_t):
        assert f.grad is not None and f.grad.abs().sum() > 0
    diag = loss_fn.diagnostics()
    assert math.isclose(diag["value"], float(loss.detach()), rel_tol=1e-6)


@pytest.mark.parametrize("cls", [CORAL, MMD])
def test_statistical_losses_zero_for_identical_and_larger_for_shifted(cls):
    loss_fn = cls()
    f = _feats(1)
    same = float(loss_fn(f, f.clone()))
    other_sample = float(loss_fn(f, _feats(2)))
    shifted = float(loss_fn(f, _feats(2, shift=2.0, scale=1.5)))
    assert abs(same) < 1e-6
    assert shifted > 5 * other_sample
    assert shifted > 0.05


def test_coral_paper_form_ignores_pure_offset_but_sees_covariance():
    paper = CORAL(include_mean=False)
    f = _feats(1)
    assert float(paper(f, f + 3.0)) < 1e-6
    assert float(paper(f, f * 2.0)) > 0.1
    assert float(CORAL()(f, f + 3.0)) > 1.0


def test_mmd_bandwidths_follow_median_heuristic():
    mmd = MMD(multipliers=(0.5, 1.0, 2.0))
    f_s, f_t = _feats(1), _feats(2, shift=0.5)
    mmd(f_s, f_t)
    z = torch.cat([f_s, f_t])
    d2 = torch.cdist(z, z).pow(2)
    median = d2[~torch.eye(len(z), dtype=torch.bool)].median()
    assert mmd.bandwidths == pytest.approx([math.sqrt(m * float(median)) for m in (0.5, 1.0, 2.0)], rel=1e-4)
    fixed = MMD(sigmas=(3.0,))
    fixed(f_s, f_t)
    assert fixed.bandwidths == pytest.approx([3.0])


@pytest.mark.parametrize("cls", [CORAL, MMD])
def test_loss_decreases_when_optimising_a_learnable_shift(cls):
    loss_fn = cls()
    f_s, f_t = _feats(1), _feats(2, shift=1.5)
    shift = torch.zeros(D, requires_grad=True)
    opt = torch.optim.SGD([shift], lr=0.5)
    values = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(f_s + shift, f_t)
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert values[-1] < 0.5 * values[0]
    assert float(shift.detach().mean()) > 0.3  # moved towards the real offset


def test_dann_feature_extractor_confuses_discriminator():
    """Training features through the GRL drives the shift apart -> together (domain acc falls)."""
    dann = DANN(D, hidden=32, max_iters=1, batch_norm=False)  # lambda = 1 from the first step
    dann.grl.iter_num = 1
    f_s, f_t = _feats(1, n=64), _feats(2, n=64, shift=2.0)
    shift = torch.zeros(D, requires_grad=True)
    opt = torch.optim.SGD([{"params": [shift], "lr": 2.0}, {"params": dann.parameters(), "lr": 0.05}])
    first_gap = None
    for _ in range(100):
        opt.zero_grad()
        dann(f_s + shift, f_t).backward()
        opt.step()
        gap = float((f_s + shift).detach().mean() - f_t.mean())
        first_gap = gap if first_gap is None else first_gap
    assert abs(gap) < 0.5 * abs(first_gap)
    assert 0.0 <= dann.domain_accuracy <= 1.0
    assert 0.0 < dann.diagnostics()["grl_coeff"] <= 1.0


def test_grl_negates_gradient_exactly_times_lambda():
    x = torch.randn(5, D, requires_grad=True)
    upstream = torch.randn(5, D)
    GradientReverseLayer(0.37)(x).backward(upstream)
    assert torch.equal(x.grad, -0.37 * upstream)
    assert torch.equal(GradientReverseLayer(0.37)(x), x)  # identity forward


def test_warm_start_schedule_matches_ganin():
    grl = WarmStartGradientReverseLayer(max_iters=100, auto_step=True)
    assert grl.coeff == 0.0
    x = torch.randn(3, D, requires_grad=True)
    for _ in range(30):
        grl(x)
    p = 30 / 100
    expected = 2.0 / (1.0 + math.exp(-10 * p)) - 1.0
    assert grl.coeff == pytest.approx(expected, abs=1e-12)
    upstream = torch.ones(3, D)
    grl.eval()  # no auto step in eval mode: the lambda used is the current one
    grl(x).backward(upstream)
    assert torch.equal(x.grad, -expected * upstream)
    assert grl_coefficient(1.0) == pytest.approx(2.0 / (1.0 + math.exp(-10)) - 1.0)
    assert grl_coefficient(5.0) == grl_coefficient(1.0)  # progress is clamped


def _bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))


def test_adabn_changes_only_bn_statistics_towards_target():
    net = _bn_net()
    # Pretend the net was trained on "sim": set BN stats far from the real data's.
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)
        net[1].running_var.fill_(9.0)
    net.train()
    params = {k: v.clone() for k, v in net.named_parameters()}
    g = torch.Generator().manual_seed(3)
    real = [torch.randn(8, 3, 8, 8, generator=g) * 2.0 + 1.0 for _ in range(4)]
    stats = adapt_bn(net, real)

    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]), k
    assert net.training and all(m.training for m in net.modules())  # modes restored
    assert net[1].momentum == 0.1  # momentum restored
    assert stats.bn_layers == 2 and stats.batches == 4 and stats.samples == 32 and stats.mean_shift > 0

    # Target statistics of the first BN's input, recomputed independently.
    with torch.no_grad():
        conv_out = torch.cat([net[0](x) for x in real])
    target_mean = conv_out.mean(dim=(0, 2, 3))
    assert torch.allclose(net[1].running_mean, target_mean, atol=1e-5)
    per_batch_var = torch.stack([net[0](x).detach().var(dim=(0, 2, 3), unbiased=True) for x in real]).mean(0)
    assert torch.allclose(net[1].running_var, per_batch_var, atol=1e-4)
    assert int(net[1].num_batches_tracked) == 4


def test_adabn_accepts_loader_tuples_and_forward_fn_and_rejects_bad_input():
    net = _bn_net().eval()
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(4, 3, 8, 8, generator=g), torch.zeros(4)) for _ in range(2)]
    calls = []

    def fwd(x):
        calls.append(x.shape[0])
        return net(x)

    adapt_bn(net, batches, forward=fwd)
    assert calls == [4, 4] and not net.training

    before = net[1].running_mean.clone()
    with pytest.raises(ValueError, match="at least 2 samples"):
        adapt_bn(net, [torch.randn(1, 3, 8, 8)])
    assert torch.equal(net[1].running_mean, before)  # failed call leaves stats untouched
    with pytest.raises(ValueError, match="no BatchNorm"):
        adapt_bn(nn.Linear(3, 3), [torch.randn(4, 3)])


def test_build_alignment_errors_are_clear():
    with pytest.raises(ValueError, match="unknown alignment 'foo'"):
        build_alignment("foo", D)
    with pytest.raises(ValueError, match="adapt_bn"):
        build_alignment("adabn", D)
    with pytest.raises(ValueError, match="bad options for 'mmd'"):
        build_alignment("mmd", D, nonsense=1)
    with pytest.raises(ValueError, match="same width"):
        CORAL()(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="at least 2 rows"):
        CORAL()(torch.randn(1, 3), torch.randn(4, 3))


def test_adabn_on_the_real_backbone_changes_only_bn_buffers():
    from sim2real.models import build_backbone

    backbone = build_backbone("efficientnet_lite0", weights="none").eval()
    params = {k: v.clone() for k, v in backbone.named_parameters()}
    buffers = {k: v.clone() for k, v in backbone.named_buffers()}
    g = torch.Generator().manual_seed(5)
    stats = adapt_bn(backbone, [torch.rand(4, 3, 64, 48, generator=g) for _ in range(2)])
    assert stats.bn_layers > 10 and not backbone.training
    assert all(torch.equal(v, params[k]) for k, v in backbone.named_parameters())
    changed = {k for k, v in backbone.named_buffers() if not torch.equal(v, buffers[k])}
    assert changed and all(k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
                           for k in changed)
    # Embeddings of the adapted model follow the new statistics: features are finite.
    assert torch.isfinite(backbone(torch.rand(2, 3, 64, 48))).all()


def test_coral_exact_value_on_a_hand_computed_case():
    # f_s: covariance [[2, 0], [0, 0]], mean (1, 0); f_t: covariance [[0, 0], [0, 2]], mean (0, 1).
    # cov term = ||diag(2, -2)||_F^2 / (4 * 2^2) = 8 / 16 = 0.5; mean term = ||(1, -1)||^2 / 2 = 1.
    f_s = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    f_t = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    coral = CORAL()
    assert float(coral(f_s, f_t)) == pytest.approx(1.5, abs=1e-6)
    assert coral.last_cov_term == pytest.approx(0.5, abs=1e-6)
    assert coral.last_mean_term == pytest.approx(1.0, abs=1e-6)
    assert float(CORAL(include_mean=False)(f_s, f_t)) == pytest.approx(0.5, abs=1e-6)


def test_coral_matches_an_independent_numpy_computation():
    import numpy as np

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(5, 3)), rng.normal(1.0, 2.0, size=(4, 3))
    d = 3
    expected = (np.sum((np.cov(a, rowvar=False) - np.cov(b, rowvar=False)) ** 2) / (4 * d * d)
                + np.sum((a.mean(0) - b.mean(0)) ** 2) / d)
    got = float(CORAL()(torch.tensor(a), torch.tensor(b)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_mmd_exact_value_on_a_hand_computed_case():
    # 1-D: sim {0, 1}, real {2}; one Gaussian kernel exp(-d^2 / 2) (sigma = 1).
    # k_ss mean = (2 + 2 e^-1/2) / 4, k_tt = 1, k_st mean = (e^-2 + e^-1/2) / 2
    # -> MMD^2 = 1.5 - 0.5 e^-1/2 - e^-2.
    f_s, f_t = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0]])
    expected = 1.5 - 0.5 * math.exp(-0.5) - math.exp(-2.0)
    assert float(MMD(sigmas=(1.0,))(f_s, f_t)) == pytest.approx(expected, abs=1e-6)
    # Median heuristic: distinct-pair d^2 of {0, 1, 2} are 1, 1, 1, 1, 4, 4 -> median 1 (lower middle),
    # so multipliers (0.5, 1, 2) give sigma^2 = 0.5, 1, 2 and the kernel is their sum.
    def k(d2):
        return sum(math.exp(-d2 / (2 * s2)) for s2 in (0.5, 1.0, 2.0))
    expected3 = (2 * k(0) + 2 * k(1)) / 4 + k(0) - 2 * (k(4) + k(1)) / 2
    mmd = MMD(multipliers=(0.5, 1.0, 2.0))
    assert float(mmd(f_s, f_t)) == pytest.approx(expected3, abs=1e-6)
    assert mmd.bandwidths == pytest.approx([math.sqrt(0.5), 1.0, math.sqrt(2.0)])
