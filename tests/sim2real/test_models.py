"""PerceptionModel: heads, losses, freezing, cut point, checkpoints (real EfficientNet-Lite0)."""

from __future__ import annotations

import copy

import pytest
import torch

from sim2real.config import ConfigError, load_config
from sim2real.models import (
    CheckpointError, HeadConfig, ModelConfig, PerceptionModel, build_backbone, build_model, load_checkpoint,
    read_checkpoint_meta, save_checkpoint,
)

HW = (96, 128)
CLASSES = ["cube", "ball", "mug"]


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def make_model(backbone, head="dense", trainable=0, **head_kw) -> PerceptionModel:
    torch.manual_seed(0)
    model = PerceptionModel(copy.deepcopy(backbone), CLASSES, HeadConfig(type=head, **head_kw), HW)
    return model.unfreeze_last(trainable)


def batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, *HW, generator=g)
    kp = torch.rand(b, 8, 3, generator=g) * torch.tensor([HW[1], HW[0], 3.0])
    kp[..., 2] = kp[..., 2].floor()
    targets = {"center": torch.tensor([[40.0, 50.0], [70.3, 31.8]])[:b],
               "box": torch.tensor([[20.0, 30.0, 60.0, 70.0], [40.0, 10.0, 100.0, 52.0]])[:b],
               "keypoints": kp, "class": torch.tensor([0, 2])[:b], "has_loc": torch.tensor([True, True])[:b]}
    return x, targets


@pytest.mark.parametrize("head,stride", [("dense", 8), ("dense", 16), ("global", 8)])
def test_forward_backward_shapes(lite0, head, stride):
    model = make_model(lite0, head, trainable=1, stride=stride).train()
    x, targets = batch()
    out = model(x)
    assert out["logits"].shape == (2, 3)
    assert out["center"].shape == (2, 2) and out["box"].shape == (2, 4)
    assert out["keypoints"].shape == (2, 8, 2) and out["kp_score"].shape == (2, 8)
    assert out["embed"].shape == (2, lite0.num_features)
    assert (out["box"][:, 2:] >= out["box"][:, :2]).all()
    total, parts = model.compute_loss(out, targets)
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    total.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for n, g in grads.items() if n.startswith("head."))
    last = model.backbone.stage_names[-1]
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items()
               if n.startswith(f"backbone.stages.{last}."))
    assert all(g is None for n, g in grads.items() if n.startswith("backbone.stages.stem."))


def test_loss_handles_unlabelled_and_class_only_samples(lite0):
    model = make_model(lite0, "dense")
    x, targets = batch()
    targets["has_loc"] = torch.tensor([False, True])
    targets["class"] = torch.tensor([-1, 1])
    total, parts = model.compute_loss(model(x), targets)
    assert torch.isfinite(total)
    total, parts = model.compute_loss(model(x), {"class": torch.tensor([0, 1])})
    assert set(parts) >= {"cls", "center"} and parts["center"] == 0 and parts["cls"] > 0
    with pytest.raises(ValueError, match="keypoints"):
        model.compute_loss(model(x), {**targets, "keypoints": torch.zeros(2, 5, 3)})


def test_dense_encode_decode_consistent(lite0):
    """Raw maps built from the targets decode back to the targets, and their regression losses are 0."""
    model = make_model(lite0, "dense").eval()
    x, t = batch()
    out = model(x)
    raw = {k: torch.zeros_like(v) for k, v in out["raw"].items()}
    s = model.head.stride
    raw["hm"].fill_(-10.0)
    raw["kp_hm"].fill_(-10.0)
    for b in range(2):
        c = t["center"][b] / s
        i = c.floor().long()
        raw["hm"][b, 0, i[1], i[0]] = 10.0
        raw["off"][b, :, i[1], i[0]] = c - i
        x0, y0, x1, y1 = t["box"][b] / s
        raw["box"][b, :, i[1], i[0]] = torch.stack([c[0] - x0, c[1] - y0, x1 - c[0], y1 - c[1]])
        raw["kp_reg"][b, :, i[1], i[0]] = (t["keypoints"][b, :, :2] / s - c).reshape(-1)
    dec = model.head.decode(raw)
    torch.testing.assert_close(dec["center"], t["center"])
    torch.testing.assert_close(dec["box"], t["box"])
    torch.testing.assert_close(dec["keypoints"], t["keypoints"][..., :2])  # kp heatmaps off -> regression
    _, parts = model.compute_loss({**out, "raw": raw}, t)
    assert parts["offset"] < 1e-6 and parts["box"] < 1e-6
    vis_any = (t["keypoints"][..., 2] >= 1).any()
    assert not vis_any or parts["keypoints"] < 1e-6


def test_freezing_keeps_weights_and_bn_stats_bit_identical(lite0):
    model = make_model(lite0, "dense", trainable=2)
    frozen = model.frozen_stages
    assert frozen == model.backbone.stage_names[:-2]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.param_groups(lr=1e-2, weight_decay=0.1))
    model.train()
    stages = model.backbone.stages
    assert not stages[frozen[0]].training and stages[model.backbone.stage_names[-1]].training
    x, targets = batch()
    for _ in range(2):
        opt.zero_grad()
        total, _ = model.compute_loss(model(x), targets)
        total.backward()
        opt.step()
    after = model.state_dict()
    for k in before:
        stage = k.split(".")[2] if k.startswith("backbone.stages.") else None
        if stage in frozen or k.startswith("backbone.tail."):
            assert torch.equal(before[k], after[k]), k
    last = model.backbone.stage_names[-1]
    changed_bn = [k for k in after if k.startswith(f"backbone.stages.{last}.") and k.endswith("running_mean")]
    assert changed_bn and any(not torch.equal(before[k], after[k]) for k in changed_bn)
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("head."))


def test_param_groups_layer_decay(lite0):
    model = make_model(lite0, "global", trainable=3)
    groups = model.param_groups(lr=1.0, backbone_lr_scale=0.1, layer_decay=0.5)
    lr = {g["name"]: g["lr"] for g in groups}
    names = model.backbone.stage_names
    assert lr["head"] == 1.0
    assert lr[f"backbone.{names[-1]}"] == pytest.approx(0.1)
    assert lr[f"backbone.{names[-3]}"] == pytest.approx(0.025)
    assert not any(f"backbone.{n}" in lr for n in names[:-3])
    assert all(g["weight_decay"] == 0.0 for g in groups if g["name"].endswith("no_decay"))
    n_params = sum(p.numel() for g in groups for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("head", ["dense", "global"])
@pytest.mark.parametrize("trainable", [0, 1, 3, -1])
def test_frozen_part_then_forward_from_cut_equals_forward(lite0, head, trainable):
    model = make_model(lite0, head, trainable=trainable).eval()
    x, _ = batch()
    feats = model.frozen_part(x)
    assert list(feats) == model.cut_keys()
    with torch.no_grad():
        a, b = model(x), model.forward_from_cut({k: v.clone() for k, v in feats.items()})
    for k in ("logits", "center", "box", "keypoints", "kp_score", "embed"):
        assert torch.equal(a[k], b[k]), k
    if trainable == -1:
        assert model.cut_index == 0 and torch.equal(feats["cut"], x)
    if trainable == 0 and head == "dense":  # all frozen: cached maps cover every tap
        assert set(model.cut_keys()) == {"cut", *model.tap_names[:-1]}
    model.unfreeze_last(4 if trainable != 4 else 2)
    with pytest.raises(ValueError, match="different cut"):
        model.forward_from_cut(feats)


def test_embed_matches_forward(lite0):
    model = make_model(lite0, "dense").eval()
    x, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), model(x)["embed"])
    with pytest.raises(ValueError, match="make_preprocess"):
        model(torch.zeros(1, 3, 64, 64))


def test_training_on_cached_features_reduces_loss(lite0):
    model = make_model(lite0, "global", trainable=0, dropout=0.0)
    x, targets = batch()
    with torch.no_grad():
        cache = model.frozen_part(x)
    opt = torch.optim.Adam(model.param_groups(lr=3e-3))
    losses = []
    model.train()
    for _ in range(25):
        opt.zero_grad()
        total, _ = model.compute_loss(model.forward_from_cut(cache), targets)
        total.backward()
        opt.step()
        losses.append(total.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("head", ["dense", "global"])
def test_checkpoint_round_trip(tmp_path, lite0, head):
    model = make_model(lite0, head, trainable=1)
    # AdaBN-style change to a FROZEN stage must survive a module checkpoint too.
    bn = next(m for m in model.backbone.stages["blocks_2"].modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean += 0.5
    model.eval()
    x, _ = batch()
    with torch.no_grad():
        ref = model(x)
    mod = save_checkpoint(tmp_path / "module.pt", model, extra={"epoch": 3})
    full = save_checkpoint(tmp_path / "full.pt", model, full=True)
    assert mod.stat().st_size < 0.5 * full.stat().st_size
    raw = torch.load(mod, weights_only=True)
    assert isinstance(raw["meta"], str) and all(torch.is_tensor(v) for v in raw["state"].values())
    meta = read_checkpoint_meta(mod)
    assert meta["classes"] == CLASSES and meta["input_hw"] == list(HW) and meta["extra"] == {"epoch": 3}
    assert meta["preprocess"]["cfg"]["mean"] == [0.5, 0.5, 0.5]
    for path, backbone in ((mod, None), (mod, lite0), (full, None)):
        loaded = load_checkpoint(path, backbone=backbone)
        assert loaded.frozen_stages == model.frozen_stages and loaded.classes == CLASSES
        with torch.no_grad():
            out = loaded(x)
        for k in ("logits", "center", "box", "keypoints", "kp_score", "embed"):
            assert torch.equal(out[k], ref[k]), (path.name, k)
    # the shared backbone was not altered by snapping a module onto it
    assert torch.equal(lite0.state_dict()["stages.blocks_2.0.bn1.running_mean"],
                       build_backbone("efficientnet_lite0").state_dict()["stages.blocks_2.0.bn1.running_mean"])
    # a model loaded from a full checkpoint still saves modules relative to the pretrained weights
    again = save_checkpoint(tmp_path / "again.pt", load_checkpoint(full))
    with torch.no_grad():
        assert torch.equal(load_checkpoint(again)(x)["center"], ref["center"])


def test_checkpoint_on_wrong_backbone_is_an_error(tmp_path, lite0):
    path = save_checkpoint(tmp_path / "m.pt", make_model(lite0, "global"))
    with pytest.raises(CheckpointError, match="weights hash"):
        load_checkpoint(path, backbone=build_backbone("efficientnet_lite0", weights="none"))
    with pytest.raises(CheckpointError, match="efficientnet_lite0"):
        load_checkpoint(path, backbone=build_backbone("timm:resnet10t", weights="none"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_model_config_from_yaml_overrides(lite0):
    cfg = load_config(ModelConfig, None, ["input_short_side=96", "head.type=global", "trainable_blocks=2",
                                          "head.loss_weights.box=2.0"])
    model = build_model(cfg, CLASSES, image_hw=(480, 640), backbone=copy.deepcopy(lite0))
    assert model.input_hw == (96, 128) and model.head_cfg.type == "global"
    assert len(model.frozen_stages) == len(model.backbone.stage_names) - 2
    assert model.make_preprocess().input_hw == (96, 128)
    with pytest.raises(ConfigError, match="head.type"):
        load_config(ModelConfig, None, ["head.type=mlp"])
    with pytest.raises(ConfigError, match="loss_weights.heatmap"):
        load_config(ModelConfig, None, ["head.loss_weights.heatmap=1.0"])
    with pytest.raises(ConfigError, match="input_short_side"):
        load_config(ModelConfig, None, ["input_short_side=96", "input_hw=[96,128]"])


def test_default_config_builds_frozen_lite0():
    model = build_model(ModelConfig(input_hw=[64, 96]), ["cube"])
    assert model.backbone.name == "efficientnet_lite0" and model.frozen_stages == model.backbone.stage_names


@pytest.mark.parametrize("name,head,stride,k", [("timm:resnet10t", "dense", 16, 8), ("timm:regnetx_002", "dense", 8, 0),
                                                ("torchvision:mobilenet_v3_small", "global", 8, 4),
                                                ("timm:resnet10t", "global", 8, 0)])
def test_heads_on_other_backbones(name, head, stride, k):
    bb = build_backbone(name, weights="none")
    model = PerceptionModel(bb, CLASSES, HeadConfig(type=head, stride=stride, num_keypoints=k), HW).unfreeze_last(1)
    x, t = batch()
    t["keypoints"] = t["keypoints"][:, :k]
    out = model.train()(x)
    assert out["keypoints"].shape == (2, k, 2) and out["kp_score"].shape == (2, k)
    total, _ = model.compute_loss(out, t)
    total.backward()
    assert torch.isfinite(total)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["center"], model.forward_from_cut(model.frozen_part(x))["center"])


def test_deepcopied_backbone_classifies_with_its_own_weights(lite0):
    bb = copy.deepcopy(lite0)
    with torch.no_grad():
        bb.tail["classifier"].bias += 100.0 * torch.nn.functional.one_hot(torch.tensor(7), 1000).float()
        x = torch.randn(1, 3, 64, 64)
        assert int(bb.classify(x).argmax()) == 7 and int(lite0.classify(x).argmax()) != 7


def test_onnx_export_matches_torch(tmp_path, lite0):
    import numpy as np
    import onnxruntime as ort

    from sim2real.models.perception import EXPORT_OUTPUTS, ExportModule

    model = make_model(lite0, "dense")
    wrapper = ExportModule(model)
    x, _ = batch()
    path = tmp_path / "m.onnx"
    torch.onnx.export(wrapper, (x,), str(path), input_names=["image"], output_names=list(EXPORT_OUTPUTS),
                      dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False)
    assert not model.training
    got = ort.InferenceSession(str(path)).run(None, {"image": x[:1].numpy()})
    with torch.no_grad():
        ref = wrapper(x[:1])
    for name, a, b in zip(EXPORT_OUTPUTS, got, ref):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-3, rtol=1e-3, err_msg=name)


def test_frozen_part_at_an_explicit_cut_and_its_digest(lite0):
    """Adaptation caches at the deepest cut its schedule reaches, before the model's own cut."""
    model = make_model(lite0, "dense", trainable=0).eval()
    x, _ = batch()
    cut = 5
    with torch.no_grad():
        feats = model.frozen_part(x, cut)
        taps: dict = {}
        ref = model.backbone(x, 0, cut, taps, model.cut_keys(cut)[1:])
    assert list(feats) == model.cut_keys(cut) and torch.equal(feats["cut"], ref)
    assert model.cut_info(cut)["cut_index"] == cut and model.cut_info()["cut_index"] == model.cut_index
    assert model.frozen_digest(0) == "input"
    digest = model.frozen_digest(cut)
    assert digest == make_model(lite0, "dense").frozen_digest(cut) != model.frozen_digest(cut + 1)
    # BatchNorm statistics changed (AdaBN) in a stage inside the cut: a different digest.
    bn = next(m for m in model.backbone.stages[model.backbone.stage_names[cut - 1]].modules()
              if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean += 1.0
    assert model.frozen_digest(cut) != digest
    assert model.frozen_digest() == model.frozen_digest(model.cut_index)
