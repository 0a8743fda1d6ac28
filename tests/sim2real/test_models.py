"""PerceptionModel: heads, losses, freezing, cut point, checkpoints (real EfficientNet-Lite0)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import numpy as np

from sim2real.config import ConfigError, load_config
from sim2real.eval.instances import decode_maps, select
from sim2real.models import (
    CheckpointError, HeadConfig, ModelConfig, PerceptionModel, build_backbone, build_model, load_checkpoint,
    read_checkpoint_meta, save_checkpoint,
)
from sim2real.models.heads import MAP_NAMES, loss_weights

HW = (96, 128)
CLASSES = ["cube", "ball", "mug"]
MAPS = ("heatmap", "offset", "ltrb", "kp_reg", "kp_heatmap", "kp_offset")


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def make_model(backbone, trainable=0, **head_kw) -> PerceptionModel:
    torch.manual_seed(0)
    model = PerceptionModel(copy.deepcopy(backbone), CLASSES, HeadConfig(**head_kw), HW)
    return model.unfreeze_last(trainable)


def batch(b=2, seed=0):
    """Padded instance targets (model-input px): image 0 holds one cube, image 1 a mug and a ball."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, *HW, generator=g)
    kp = torch.rand(b, 2, 8, 3, generator=g) * torch.tensor([HW[1], HW[0], 3.0])
    kp[..., 2] = kp[..., 2].floor()
    kp[0, 1] = 0
    targets = {"label": torch.tensor([[0, -1], [2, 1]])[:b],
               "center": torch.tensor([[[40.0, 50.0], [0, 0]], [[70.3, 31.8], [20.0, 75.0]]])[:b],
               "box": torch.tensor([[[20.0, 30.0, 60.0, 70.0], [0, 0, 0, 0]],
                                    [[40.0, 10.0, 100.0, 52.0], [8.0, 66.0, 32.0, 84.0]]])[:b],
               "keypoints": kp, "ignore": torch.zeros(b, 2, dtype=torch.bool),
               "has_loc": torch.tensor([True, True])[:b]}
    return x, targets


@pytest.mark.parametrize("stride", [8, 16])
def test_forward_backward_shapes(lite0, stride):
    model = make_model(lite0, trainable=1, stride=stride).train()
    x, targets = batch()
    out = model(x)
    h, w = HW[0] // stride, HW[1] // stride
    shapes = {"heatmap": 3, "offset": 2, "ltrb": 4, "kp_reg": 16, "kp_heatmap": 8, "kp_offset": 16}
    assert {k: tuple(out[k].shape) for k in MAPS} == {k: (2, c, h, w) for k, c in shapes.items()}
    assert "logits" not in out and "center" not in out  # the maps are the output; decoding is numpy
    assert out["embed"].shape == (2, lite0.num_features)
    for k in ("heatmap", "kp_heatmap"):  # probabilities (sigmoid of the raw logits)
        assert ((out[k] > 0) & (out[k] < 1)).all()
    total, parts = model.compute_loss(out, targets)
    assert set(parts) == {"center", "offset", "box", "giou", "keypoints", "kp_heatmap", "kp_offset"}
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    total.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for n, g in grads.items() if n.startswith("head."))
    last = model.backbone.stage_names[-1]
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items()
               if n.startswith(f"backbone.stages.{last}."))
    assert all(g is None for n, g in grads.items() if n.startswith("backbone.stages.stem."))


def test_loss_handles_unlabelled_and_negative_images(lite0):
    model = make_model(lite0).eval()
    x, targets = batch()
    with torch.no_grad():
        out = model(x)
        # An unlabelled image (has_loc False) adds nothing: the loss equals that of the labelled one alone.
        total, parts = model.compute_loss(out, {**targets, "has_loc": torch.tensor([False, True])})
        alone = {k: (v[1:] if k != "raw" else {n: r[1:] for n, r in v.items()}) for k, v in out.items()}
        ref, ref_parts = model.compute_loss(alone, {k: v[1:] for k, v in targets.items()})
        torch.testing.assert_close(total, ref)
        # Images without objects are negatives: background loss on the heatmap, no regression.
        total, parts = model.compute_loss(out, {"label": torch.full((2, 3), -1)})
        assert parts["center"] > 0 and parts["offset"] == 0 and parts["box"] == 0 and parts["keypoints"] == 0
        _, parts = model.compute_loss(out, {})
        assert parts["center"] > 0 and parts["box"] == 0
        # Nothing labelled: no loss at all.
        total, _ = model.compute_loss(out, {**targets, "has_loc": torch.tensor([False, False])})
        assert total == 0
    with pytest.raises(ValueError, match="keypoints"):
        model.compute_loss(out, {**targets, "keypoints": torch.zeros(2, 2, 5, 3)})
    with pytest.raises(ValueError, match="label"):
        model.compute_loss(out, {**targets, "label": torch.tensor([0, 2])})


def test_maps_built_from_the_targets_decode_to_them(lite0):
    """Raw maps built from the instances decode (numpy, decode_maps) back to the instances, every
    class in its own channel, and their regression losses are 0."""
    model = make_model(lite0).eval()
    x, t = batch()
    with torch.no_grad():
        out = model(x)
    raw = {k: torch.zeros_like(v) for k, v in out["raw"].items()}
    s = model.head.stride
    raw["hm"].fill_(-10.0)
    raw["kp_hm"].fill_(-10.0)
    for b in range(2):
        for j in range(2):
            lab = int(t["label"][b, j])
            if lab < 0:
                continue
            c = t["center"][b, j] / s
            i = c.floor().long()
            raw["hm"][b, lab, i[1], i[0]] = 10.0
            raw["off"][b, :, i[1], i[0]] = c - i
            x0, y0, x1, y1 = t["box"][b, j] / s
            raw["box"][b, :, i[1], i[0]] = torch.stack([c[0] - x0, c[1] - y0, x1 - c[0], y1 - c[1]])
            raw["kp_reg"][b, :, i[1], i[0]] = (t["keypoints"][b, j, :, :2] / s - c).reshape(-1)
    maps = {MAP_NAMES[n]: (torch.sigmoid(v) if n in ("hm", "kp_hm") else v).numpy() for n, v in raw.items()}
    dec = decode_maps(maps, **{**model.decode_options(), "score_thresh": 0.5})
    for b in range(2):
        got = select(dec, b)
        n = int((t["label"][b] >= 0).sum())
        order = np.argsort(got["label"])
        want = np.argsort(t["label"][b, :n].numpy())
        np.testing.assert_array_equal(got["label"][order], t["label"][b, :n].numpy()[want])
        np.testing.assert_allclose(got["center"][order], t["center"][b, :n].numpy()[want], atol=1e-4)
        np.testing.assert_allclose(got["box"][order], t["box"][b, :n].numpy()[want], atol=1e-4)
        # kp heatmaps off -> the regressed corners
        np.testing.assert_allclose(got["keypoints"][order], t["keypoints"][b, :n, :, :2].numpy()[want], atol=1e-4)
    _, parts = model.compute_loss({**out, "raw": raw}, t)
    assert parts["offset"] < 1e-6 and parts["box"] < 1e-6
    assert (t["keypoints"][..., 2] >= 1).any() and parts["keypoints"] < 1e-6


def test_freezing_keeps_weights_and_bn_stats_bit_identical(lite0):
    model = make_model(lite0, trainable=2)
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
    model = make_model(lite0, trainable=3)
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


@pytest.mark.parametrize("trainable", [0, 1, 3, -1])
def test_frozen_part_then_forward_from_cut_equals_forward(lite0, trainable):
    model = make_model(lite0, trainable=trainable).eval()
    x, _ = batch()
    feats = model.frozen_part(x)
    assert list(feats) == model.cut_keys()
    with torch.no_grad():
        a, b = model(x), model.forward_from_cut({k: v.clone() for k, v in feats.items()})
    for k in (*MAPS, "embed"):
        assert torch.equal(a[k], b[k]), k
    if trainable == -1:
        assert model.cut_index == 0 and torch.equal(feats["cut"], x)
    if trainable == 0:  # all frozen: cached maps cover every tap
        assert set(model.cut_keys()) == {"cut", *model.tap_names[:-1]}
    model.unfreeze_last(4 if trainable != 4 else 2)
    with pytest.raises(ValueError, match="different cut"):
        model.forward_from_cut(feats)


def test_embed_matches_forward(lite0):
    model = make_model(lite0).eval()
    x, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), model(x)["embed"])
    with pytest.raises(ValueError, match="make_preprocess"):
        model(torch.zeros(1, 3, 64, 64))


def test_training_on_cached_features_reduces_loss(lite0):
    model = make_model(lite0, trainable=0)
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


def test_checkpoint_round_trip(tmp_path, lite0):
    model = make_model(lite0, trainable=1, stride=8, max_instances=7, score_thresh=0.4)
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
        assert (loaded.head_cfg.stride, loaded.head_cfg.max_instances, loaded.head_cfg.score_thresh) == (8, 7, 0.4)
        assert loaded.decode_options() == model.decode_options()
        for k in (*MAPS, "embed"):
            assert torch.equal(out[k], ref[k]), (path.name, k)
    # the shared backbone was not altered by snapping a module onto it
    assert torch.equal(lite0.state_dict()["stages.blocks_2.0.bn1.running_mean"],
                       build_backbone("efficientnet_lite0").state_dict()["stages.blocks_2.0.bn1.running_mean"])
    # a model loaded from a full checkpoint still saves modules relative to the pretrained weights
    again = save_checkpoint(tmp_path / "again.pt", load_checkpoint(full))
    with torch.no_grad():
        assert torch.equal(load_checkpoint(again)(x)["heatmap"], ref["heatmap"])


def test_checkpoint_on_wrong_backbone_is_an_error(tmp_path, lite0):
    path = save_checkpoint(tmp_path / "m.pt", make_model(lite0))
    with pytest.raises(CheckpointError, match="weights hash"):
        load_checkpoint(path, backbone=build_backbone("efficientnet_lite0", weights="none"))
    with pytest.raises(CheckpointError, match="efficientnet_lite0"):
        load_checkpoint(path, backbone=build_backbone("timm:resnet10t", weights="none"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_single_object_checkpoint_says_retrain(tmp_path, lite0):
    """A version-1 checkpoint (one object per image: a global head or a class MLP) cannot be loaded
    into today's per-class heatmap head; the error says so and to retrain."""
    path = save_checkpoint(tmp_path / "old.pt", make_model(lite0))
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta"])
    meta["version"] = 1
    meta["head"] = {**meta["head"], "type": "global", "hidden": 256, "dropout": 0.1}
    for key in ("max_instances", "score_thresh"):
        del meta["head"][key]
    payload["meta"] = json.dumps(meta)
    torch.save(payload, path)
    for read in (load_checkpoint, read_checkpoint_meta):
        with pytest.raises(CheckpointError, match=r"old.pt.*version 1.*retrain it with 'sim2real train'"):
            read(path)


def test_model_config_from_yaml_overrides(lite0):
    cfg = load_config(ModelConfig, None, ["input_short_side=96", "head.type=dense", "trainable_blocks=2",
                                          "head.loss_weights.box=2.0", "head.max_instances=5",
                                          "head.score_thresh=0.5"])
    model = build_model(cfg, CLASSES, image_hw=(480, 640), backbone=copy.deepcopy(lite0))
    assert model.input_hw == (96, 128) and model.head_cfg.type == "dense"
    assert model.decode_options()["max_instances"] == 5 and model.head_cfg.score_thresh == 0.5
    assert loss_weights(model.head_cfg)["box"] == 2.0
    assert len(model.frozen_stages) == len(model.backbone.stage_names) - 2
    assert model.make_preprocess().input_hw == (96, 128)
    for bad in ("mlp", "global"):  # the single-object global head is gone
        with pytest.raises(ConfigError, match="head.type"):
            load_config(ModelConfig, None, [f"head.type={bad}"])
    with pytest.raises(ConfigError, match="head.max_instances"):
        load_config(ModelConfig, None, ["head.max_instances=0"])
    with pytest.raises(ConfigError, match="loss_weights.cls"):  # the class is the heatmap ("center")
        load_config(ModelConfig, None, ["head.loss_weights.cls=1.0"])
    with pytest.raises(ConfigError, match="loss_weights.heatmap"):
        load_config(ModelConfig, None, ["head.loss_weights.heatmap=1.0"])
    with pytest.raises(ConfigError, match="input_short_side"):
        load_config(ModelConfig, None, ["input_short_side=96", "input_hw=[96,128]"])


def test_default_config_builds_frozen_lite0():
    model = build_model(ModelConfig(input_hw=[64, 96]), ["cube"])
    assert model.backbone.name == "efficientnet_lite0" and model.frozen_stages == model.backbone.stage_names


@pytest.mark.parametrize("name,stride,k", [("timm:resnet10t", 16, 8), ("timm:regnetx_002", 8, 0),
                                           ("torchvision:mobilenet_v3_small", 8, 4), ("timm:resnet10t", 8, 0)])
def test_heads_on_other_backbones(name, stride, k):
    bb = build_backbone(name, weights="none")
    model = PerceptionModel(bb, CLASSES, HeadConfig(stride=stride, num_keypoints=k), HW).unfreeze_last(1)
    x, t = batch()
    t["keypoints"] = t["keypoints"][:, :, :k]
    out = model.train()(x)
    h, w = HW[0] // stride, HW[1] // stride
    assert out["heatmap"].shape == (2, 3, h, w)
    if k:
        assert out["kp_reg"].shape == (2, 2 * k, h, w) and out["kp_heatmap"].shape == (2, k, h, w)
    else:
        assert not {"kp_reg", "kp_heatmap", "kp_offset"} & set(out)
    total, _ = model.compute_loss(out, t)
    total.backward()
    assert torch.isfinite(total)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["heatmap"], model.forward_from_cut(model.frozen_part(x))["heatmap"])


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

    model = make_model(lite0)
    wrapper = ExportModule(model)
    # the exported graph takes uint8 frames (B, H, W, C) and normalises them itself
    x = torch.randint(0, 256, (2, *model.input_hw, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
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
    model = make_model(lite0, trainable=0).eval()
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
    assert digest == make_model(lite0).frozen_digest(cut) != model.frozen_digest(cut + 1)
    # BatchNorm statistics changed (AdaBN) in a stage inside the cut: a different digest.
    bn = next(m for m in model.backbone.stages[model.backbone.stage_names[cut - 1]].modules()
              if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean += 1.0
    assert model.frozen_digest(cut) != digest
    assert model.frozen_digest() == model.frozen_digest(model.cut_index)
