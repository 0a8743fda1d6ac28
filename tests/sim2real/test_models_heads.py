"""Dense-head cost options (stride, conv kind, branch depth and layout): shapes, gradients, configs,
checkpoints."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from sim2real.config import ConfigError, load_config
from sim2real.models import HeadConfig, ModelConfig, PerceptionModel, build_backbone, load_checkpoint, save_checkpoint
from sim2real.models.heads import MAP_NAMES
from sim2real.models.perception import head_config_from_dict, head_config_to_dict

HW = (64, 96)
CLASSES = ["cube", "ball"]


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def make(backbone, **head_kw) -> PerceptionModel:
    torch.manual_seed(0)
    return PerceptionModel(copy.deepcopy(backbone), CLASSES, HeadConfig(type="dense", **head_kw), HW).freeze_backbone()


def targets(b=2):
    """Padded instances: image 0 holds a cube and a ball, image 1 one ball."""
    kp = torch.tensor([[[[30.0, 20.0, 2.0]] * 8, [[70.0, 45.0, 2.0]] * 8],
                       [[[60.0, 40.0, 1.0]] * 8, [[0.0, 0.0, 0.0]] * 8]])[:b]
    return {"label": torch.tensor([[0, 1], [1, -1]])[:b],
            "center": torch.tensor([[[33.0, 25.5], [75.0, 50.0]], [[58.2, 38.9], [0.0, 0.0]]])[:b],
            "box": torch.tensor([[[20.0, 12.0, 46.0, 39.0], [66.0, 40.0, 84.0, 60.0]],
                                 [[45.0, 27.0, 71.0, 50.0], [0.0, 0.0, 0.0, 0.0]]])[:b],
            "keypoints": kp, "ignore": torch.zeros(b, 2, dtype=torch.bool), "has_loc": torch.tensor([True, True])[:b]}


def test_defaults_are_the_measured_choice():
    """docs/benchmarks.md ("Heads", "6D pose"): stride 8, full 3x3 convs, one per branch, width 64."""
    d = HeadConfig()
    assert (d.type, d.stride, d.width, d.conv, d.branch_depth, d.branches) == ("dense", 8, 64, "full", 1, "separate")
    assert (d.max_instances, d.score_thresh) == (20, 0.3)


@pytest.mark.parametrize("stride,conv,depth,branches", [(16, "full", 1, "grouped"), (8, "separable", 1, "separate"),
                                                        (16, "separable", 2, "shared"), (8, "full", 0, "separate"),
                                                        (16, "full", 0, "grouped")])
def test_options_forward_backward_on_cached_features(lite0, stride, conv, depth, branches):
    model = make(lite0, stride=stride, conv=conv, branch_depth=depth, branches=branches)
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model.eval().frozen_part(x)
    model.train()
    out = model.forward_from_cut(feats)
    hw = (HW[0] // stride, HW[1] // stride)
    channels = {"hm": 2, "off": 2, "box": 4, "kp_reg": 16, "kp_hm": 8, "kp_off": 16}  # hm: one per class
    assert {k: tuple(v.shape) for k, v in out["raw"].items()} == {k: (2, c, *hw) for k, c in channels.items()}
    assert {MAP_NAMES[k]: tuple(out[MAP_NAMES[k]].shape) for k in channels} == {
        MAP_NAMES[k]: (2, c, *hw) for k, c in channels.items()}
    total, parts = model.compute_loss(out, targets())
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    total.backward()
    head = dict(model.head.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.values())
    convs = [m for m in model.head.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    n_branches = {"separate": 6, "grouped": 3, "shared": 1}[branches]
    assert len(convs) == 1 + n_branches * depth  # fuse + each branch's 3x3 convs
    assert all((m.groups == m.in_channels) == (conv == "separable") for m in convs)
    pointwise = [m for m in model.head.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                 and m.in_channels == m.out_channels]
    assert len(pointwise) == (len(convs) if conv == "separable" else 0)


@pytest.mark.parametrize("branches", ["separate", "grouped", "shared"])
def test_heatmaps_start_at_the_centernet_prior(lite0, branches):
    """Every layout starts its centre and keypoint heatmaps at sigmoid ~0.1 (bias prior, small weights)."""
    model = make(lite0, branches=branches).eval()
    with torch.no_grad():
        for m in model.head.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
        raw = model(torch.randn(1, 3, *HW))["raw"]
    for name in ("hm", "kp_hm"):
        torch.testing.assert_close(torch.sigmoid(raw[name]), torch.full_like(raw[name], 0.1))
    for name in ("off", "box", "kp_reg", "kp_off"):
        assert raw[name].abs().max() < 1.0


def test_cheaper_options_have_fewer_multiply_adds(lite0):
    """Separable convs and stride 16 cut the head's work; the cached-epoch time follows it."""
    def macs(**kw) -> int:
        model = make(lite0, **kw).eval()
        total = 0

        def hook(m, i, o):
            nonlocal total
            total += o.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        hs = [m.register_forward_hook(hook) for m in model.head.modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            model(torch.zeros(1, 3, *HW))
        for h in hs:
            h.remove()
        return total
    s8 = macs(stride=8, conv="full", branches="separate")
    assert macs(stride=16, conv="full", branches="separate") < 0.4 * s8
    assert macs(stride=8, conv="separable", branches="separate") < 0.3 * s8
    assert macs(stride=8, conv="full", branch_depth=0, branches="separate") < 0.3 * s8
    assert macs(stride=8, conv="full", branches="grouped") < 0.6 * s8


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="conv"):
        load_config(ModelConfig, None, ["head.conv=winograd"])
    with pytest.raises(ConfigError, match="branch_depth"):
        load_config(ModelConfig, None, ["head.branch_depth=9"])
    with pytest.raises(ConfigError, match="stride"):
        load_config(ModelConfig, None, ["head.stride=4"])
    with pytest.raises(ConfigError, match="branches"):
        load_config(ModelConfig, None, ["head.branches=some"])
    cfg = load_config(ModelConfig, None, ["head.conv=separable", "head.branch_depth=0", "head.stride=8",
                                          "head.branches=shared"])
    assert (cfg.head.conv, cfg.head.branch_depth, cfg.head.stride, cfg.head.branches) == ("separable", 0, 8, "shared")


def test_checkpoint_round_trip_keeps_options(tmp_path, lite0):
    model = make(lite0, stride=8, conv="separable", branch_depth=2, branches="grouped").eval()
    x = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model))
    h = loaded.head_cfg
    assert (h.conv, h.branch_depth, h.stride, h.branches) == ("separable", 2, 8, "grouped")
    with torch.no_grad():
        got = loaded(x)
    for k in MAP_NAMES.values():
        assert torch.equal(got[k], ref[k]), k


def test_checkpoint_from_before_the_options_loads_as_built(tmp_path, lite0):
    """A stored head config without ``conv``/``branch_depth``/``branches`` was a full-conv, depth-1
    head with a branch per output."""
    model = make(lite0, stride=8, conv="full", branch_depth=1, branches="separate").eval()
    path = save_checkpoint(tmp_path / "old.pt", model)
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta"])
    for key in ("conv", "branch_depth", "branches"):
        del meta["head"][key]
    payload["meta"] = json.dumps(meta)
    torch.save(payload, path)
    x = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(2))
    loaded = load_checkpoint(path)
    assert (loaded.head_cfg.conv, loaded.head_cfg.branch_depth, loaded.head_cfg.branches) == ("full", 1, "separate")
    assert "head.hm.0.weight" in loaded.state_dict()  # the original module layout
    with torch.no_grad():
        assert torch.equal(loaded(x)["heatmap"], model(x)["heatmap"])
    assert head_config_from_dict(head_config_to_dict(HeadConfig(conv="separable"))).conv == "separable"


def test_giou_loss_is_zero_for_the_true_box_and_grows_with_misfit():
    from sim2real.models.heads import giou_loss

    t = torch.tensor([[[1.0, 2.0, 1.0, 2.0], [3.0, 1.0, 1.0, 1.0]]])
    on = torch.ones(1, 2)
    assert float(giou_loss(t, t, on)) == pytest.approx(0.0, abs=1e-6)
    assert float(giou_loss(t * 2, t, on)) == pytest.approx(0.75, abs=1e-6)    # same centre, 4x area: IoU 1/4
    assert float(giou_loss(t * 2, t, torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.75, abs=1e-6)  # masked
    lean = giou_loss(t * torch.tensor([1.0, 1.0, 0.5, 1.0]), t, on)   # one side too short: in between
    assert 0.0 < float(lean) < 0.75
