"""A pretrained image network cut into ordered, named stages.

Any convnet whose feature extractor is a plain chain of modules (timm's ``forward_features`` or
torchvision's ``features``/``layerN`` layout) becomes a :class:`Backbone`: the top-level children
are flattened one level (``blocks`` -> ``blocks_0`` .. ``blocks_6``), consecutive non-block
modules are grouped (``conv_stem + bn1`` -> ``stem``), and the chain stops at the ImageNet
pooling/classifier modules, which are kept aside as ``tail`` for :meth:`Backbone.classify`.
The split is checked against the original network on a dummy input, so a model whose forward
is not a chain (ViT, Swin, ...) is refused instead of silently computing something else.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

# Names that start the ImageNet pooling/classifier tail in timm and torchvision models.
TAIL_NAMES = ("global_pool", "avgpool", "fc", "classifier", "head", "head_drop", "flatten",
              "pre_logits", "fc_norm", "pooling", "dropout")


class BackboneSplitError(ValueError):
    """The network cannot be run as a chain of stages."""


def _has_params(modules: Sequence[nn.Module]) -> bool:
    return any(True for m in modules for _ in m.parameters())


def split_into_stages(model: nn.Module, boundaries: Sequence[str] = ()
                      ) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, nn.Module]]]:
    """``(stages, tail)``: named stage modules in forward order and the classifier tail.

    ``boundaries``: names of top-level modules that end a stage (timm's feature_info modules),
    for networks whose stages are not ``nn.Sequential`` containers."""
    items: list[tuple[str, nn.Module, bool]] = []  # (name, module, is_block)
    tail: list[tuple[str, nn.Module]] = []
    children = list(model.named_children())
    for i, (name, child) in enumerate(children):
        if name in TAIL_NAMES:
            tail = [(n, c) for n, c in children[i:]]
            break
        # Flatten containers of blocks (layer1, blocks, features); a stem of plain layers stays whole.
        if isinstance(child, nn.Sequential) and not name.startswith("stem") \
                and any(len(list(c.children())) > 0 for c in child):
            items.extend((f"{name}_{gc}", m, True) for gc, m in child.named_children())
        else:
            items.append((name, child, False))

    # A block is a stage of its own; runs of other modules between blocks form one stage.
    groups: list[tuple[bool, list[tuple[str, nn.Module]]]] = []
    closed = True
    for name, mod, is_block in items:
        if is_block or closed:
            groups.append((is_block, [(name, mod)]))
        else:
            groups[-1][1].append((name, mod))
        closed = is_block or name in boundaries

    # Parameterless groups (maxpool, Identity norms) join the next stage, or the last one.
    merged: list[tuple[bool, list[tuple[str, nn.Module]]]] = []
    pending: list[tuple[str, nn.Module]] = []
    for is_block, g in groups:
        if not _has_params([m for _, m in g]):
            pending.extend(g)
            continue
        merged.append((is_block, pending + g))
        pending = []
    if not merged:
        raise BackboneSplitError("the network has no trainable feature modules")
    merged[-1][1].extend(pending)

    stages = []
    for i, (is_block, g) in enumerate(merged):
        stage_name = "stem" if i == 0 and not is_block else next(n for n, m in g if _has_params([m]))
        module = g[0][1] if len(g) == 1 else nn.Sequential(OrderedDict(g))
        stages.append((stage_name, module))
    return stages, tail


def state_digests(module: nn.Module) -> tuple[str, dict[str, str]]:
    """``(overall sha256, {tensor name: blake2b})`` of every parameter and buffer."""
    overall = hashlib.sha256()
    digests = {}
    for name, t in module.state_dict().items():
        d = hashlib.blake2b(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                            if t.numel() else b"", digest_size=16)
        d.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        digests[name] = d.hexdigest()
        overall.update(name.encode() + b"\0" + d.digest())
    return overall.hexdigest(), digests


class Backbone(nn.Module):
    """Ordered named stages + pretrained preprocessing config + weight fingerprint.

    Attributes: ``name`` (registry name), ``stages``/``blocks`` (``nn.ModuleDict`` in forward
    order), ``feature_info`` (``[{"name", "num_chs", "reduction"}]`` per stage),
    ``pretrained_cfg`` (``input_size``, ``mean``, ``std``, ``interpolation``, ``channels``),
    ``weights`` (how the weights were chosen) and ``weights_hash`` (sha256 of the weights as built).
    """

    def __init__(self, name: str, stages: Sequence[tuple[str, nn.Module]], tail: Sequence[tuple[str, nn.Module]],
                 pretrained_cfg: dict, weights: str = "none"):
        super().__init__()
        self.name = name
        self.stages = nn.ModuleDict(dict(stages))
        self.tail = nn.ModuleDict(dict(tail))
        self.pretrained_cfg = normalize_cfg(pretrained_cfg)
        self.has_classifier = bool(tail)
        self.weights = weights
        self.feature_info: list[dict] = []
        self.weights_hash = ""
        self.tensor_digests: dict[str, str] = {}

    @property
    def blocks(self) -> nn.ModuleDict:
        return self.stages

    @property
    def stage_names(self) -> list[str]:
        return list(self.stages.keys())

    @property
    def num_features(self) -> int:
        return self.feature_info[-1]["num_chs"]

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None,
                taps: dict[str, torch.Tensor] | None = None, tap_names: Sequence[str] = ()) -> torch.Tensor:
        """Run stages ``start..stop-1``; outputs of stages in ``tap_names`` go into ``taps``."""
        mods = list(self.stages.items())
        for name, mod in mods[start:stop]:
            x = mod(x)
            if taps is not None and name in tap_names:
                taps[name] = x
        return x

    def _run_tail(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.tail.values():
            leaves = [leaf for leaf in m.modules() if not list(leaf.children())
                      and not isinstance(leaf, (nn.Dropout, nn.Identity))]
            if x.dim() > 2 and leaves and isinstance(leaves[0], nn.Linear):
                x = torch.flatten(x, 1)
            x = m(x)
        return x

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits of the original network (sanity checks of the pretrained weights)."""
        if not self.has_classifier:
            raise RuntimeError(f"backbone {self.name} has no usable ImageNet classifier")
        return self._run_tail(self.forward(x))

    def finalize(self, reference: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 reference_logits: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 probe_hw: int = 128) -> "Backbone":
        """Infer strides/channels on a dummy input, check the split against ``reference`` (the
        network's own feature extractor), fingerprint the weights. The ImageNet classifier
        is kept only if stages + tail reproduce ``reference_logits``."""
        self.eval()
        x = torch.randn(1, self.pretrained_cfg["channels"], probe_hw, probe_hw,
                        generator=torch.Generator().manual_seed(0))
        taps: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            try:
                out = self.forward(x, taps=taps, tap_names=self.stage_names)
            except Exception as e:  # noqa: BLE001 - any failure means the chain is not the model
                raise BackboneSplitError(f"backbone {self.name}: running its stages as a chain failed ({e}); "
                                         "only convnets whose features are a plain chain are supported") from None
            if reference is not None:
                ref = reference(x)
                if ref.shape != out.shape or not torch.allclose(ref, out, rtol=1e-4, atol=1e-4):
                    raise BackboneSplitError(
                        f"backbone {self.name}: its forward is not a plain chain of modules (stage outputs differ "
                        "from the network's own features); use a convnet such as resnet, efficientnet, "
                        "mobilenet, regnet or convnext")
            if reference_logits is not None and self.has_classifier:
                try:
                    self.has_classifier = torch.allclose(reference_logits(x), self._run_tail(out), rtol=1e-4, atol=1e-4)
                except Exception:  # noqa: BLE001 - a tail that is not a chain is simply not offered
                    self.has_classifier = False
        self.feature_info = []
        for name, t in taps.items():
            if t.dim() != 4:
                raise BackboneSplitError(f"backbone {self.name}: stage {name} outputs {t.dim()}-D tensors; "
                                         "expected (B, C, H, W) feature maps")
            self.feature_info.append({"name": name, "num_chs": int(t.shape[1]),
                                      "reduction": int(round(probe_hw / t.shape[-1]))})
        self.weights_hash, self.tensor_digests = state_digests(self)
        return self

    def stage_index(self, name_or_reduction: str | int) -> int:
        """Index of a stage by name, or of the LAST stage with a given stride (int)."""
        if isinstance(name_or_reduction, int):
            hits = [i for i, f in enumerate(self.feature_info) if f["reduction"] == name_or_reduction]
            if not hits:
                have = sorted({f["reduction"] for f in self.feature_info})
                raise ValueError(f"backbone {self.name} has no stage with stride {name_or_reduction}; "
                                 f"strides available: {have}")
            return hits[-1]
        names = self.stage_names
        if name_or_reduction not in names:
            raise ValueError(f"backbone {self.name} has no stage '{name_or_reduction}'; stages: {names}")
        return names.index(name_or_reduction)


_INTERP_NAMES = ("nearest", "bilinear", "bicubic", "area", "lanczos")


def normalize_cfg(cfg: dict) -> dict:
    """The preprocessing subset of a timm-style pretrained cfg, as plain JSON types."""
    input_size = [int(v) for v in cfg.get("input_size", (3, 224, 224))]
    interp = str(cfg.get("interpolation", "bilinear")).lower()
    if interp not in _INTERP_NAMES:
        interp = "bilinear"
    channels = int(cfg.get("channels", input_size[0]))
    mean = [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))]
    std = [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"pretrained cfg: mean/std need {channels} values, got {mean} / {std}")
    return {"input_size": input_size, "mean": mean, "std": std, "interpolation": interp, "channels": channels}
