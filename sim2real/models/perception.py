"""Backbone + head = the perception model every stage trains, adapts, evaluates and deploys."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from sim2real.config import ConfigError, rng
from sim2real.geometry.symmetry import Symmetry, symmetry_from_dict
from sim2real.models.backbone import Backbone, state_digests
from sim2real.models.heads import MAP_NAMES, HeadConfig, build_head, loss_weights
from sim2real.models.preprocess import Preprocess, resolve_input_hw
from sim2real.models.registry import DEFAULT_BACKBONE, build_backbone


@dataclass
class ModelConfig:
    backbone: str = DEFAULT_BACKBONE
    weights: str = "default"                  # default | none | download | <path>
    input_hw: Optional[list[int]] = None      # [H, W]; None -> from input_short_side / backbone
    input_short_side: Optional[int] = None    # keep the camera aspect ratio at this short side
    resize: str = "letterbox"                 # letterbox | stretch (for images of another aspect)
    head: HeadConfig = field(default_factory=HeadConfig)
    trainable_blocks: int = field(default=0, metadata=rng(-1, None))  # last N backbone stages; -1 = all
    backbone_lr_scale: float = field(default=0.1, metadata=rng(0.0, None))
    layer_decay: float = field(default=0.75, metadata=rng(0.0, 1.0, lo_open=True))

    def validate(self) -> None:
        if self.input_hw is not None and (len(self.input_hw) != 2 or min(self.input_hw) < 32):
            raise ConfigError("input_hw", "[H, W] with both sides >= 32", self.input_hw)
        if self.input_hw is not None and self.input_short_side is not None:
            raise ConfigError("input_short_side", "unset when input_hw is given", self.input_short_side)
        if self.resize not in ("letterbox", "stretch"):
            raise ConfigError("resize", "one of ['letterbox', 'stretch']", self.resize)
        self.head.validate()


class PerceptionModel(nn.Module):
    """``forward(x)`` -> the detection head's maps (``heatmap (B, C, h, w)``, ``offset``, ``ltrb``,
    ``kp_reg``, ``kp_heatmap``, ``kp_offset``; docs/contracts.md "Instances"), ``embed (B, D)`` and
    ``raw`` (logits for :meth:`compute_loss`). ``sim2real.eval.instances.decode_maps`` turns the
    maps into instances."""

    def __init__(self, backbone: Backbone, classes: Sequence[str], head: HeadConfig | None = None,
                 input_hw: Sequence[int] | None = None, resize: str = "letterbox"):
        super().__init__()
        if not classes:
            raise ValueError("PerceptionModel needs at least one class name")
        self.backbone = backbone
        self.classes = [str(c) for c in classes]
        self.head_cfg = head or HeadConfig()
        self.input_hw = tuple(int(v) for v in (input_hw or backbone.pretrained_cfg["input_size"][1:]))
        self.resize = resize
        self.head = build_head(self.head_cfg, len(self.classes), backbone.feature_info, self.input_hw)
        self.tap_names = list(self.head.tap_names)
        self._frozen: set[str] = set()
        self.objects: dict[str, dict] = {}
        self.camera: dict | None = None

    # --- objects and camera (6D pose) -----------------------------------------------------------
    def set_objects(self, objects: dict[str, dict] | None, camera: dict | None = None) -> "PerceptionModel":
        """Per class ``{"size_m": [sx, sy, sz] | None, "symmetry": Symmetry.to_dict()}`` (from the training
        data, ``data.object_models``) and the training camera ``{"K", "dist", "width", "height"}``: what
        PnP needs, kept in checkpoints and exports. The head's keypoint loss uses the symmetries."""
        from_dict = {c: dict(v) for c, v in (objects or {}).items()}
        unknown = [c for c in from_dict if c not in self.classes]
        if unknown:
            raise ValueError(f"object models for unknown classes {unknown}; the model's classes are {self.classes}")
        self.objects = from_dict
        if camera is not None:
            self.camera = dict(camera)
        self.head.set_symmetries([symmetry_from_dict(self.objects.get(c, {}).get("symmetry")).perms
                                  for c in self.classes])
        return self

    def symmetries(self) -> list[Symmetry]:
        """The :class:`Symmetry` of every class (none where unknown)."""
        return [symmetry_from_dict(self.objects.get(c, {}).get("symmetry")) for c in self.classes]

    # --- preprocessing ------------------------------------------------------------------------
    @property
    def preprocess_cfg(self) -> dict:
        """Everything :class:`Preprocess` needs: ``{"cfg", "input_hw", "resize"}``."""
        return {"cfg": dict(self.backbone.pretrained_cfg), "input_hw": list(self.input_hw), "resize": self.resize}

    def make_preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.preprocess_cfg)

    @property
    def num_keypoints(self) -> int:
        return self.head_cfg.num_keypoints

    @property
    def stride(self) -> int:
        return int(self.head_cfg.stride)

    def decode_options(self) -> dict:
        """Keyword arguments of ``decode_maps`` for this model (stride, instance cap, corner snap)."""
        c = self.head_cfg
        return {"stride": self.stride, "max_instances": c.max_instances, "kp_score_thresh": c.kp_score_thresh}

    # --- forward ------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are constants in an exported graph
            return
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.input_hw:
            raise ValueError(f"model input must be (B, {self.backbone.pretrained_cfg['channels']}, "
                             f"{self.input_hw[0]}, {self.input_hw[1]}) (use model.make_preprocess()), "
                             f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> dict:
        self._check_input(x)
        return self.forward_from_cut(self.frozen_part(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) globally pooled last-stage features (what alignment losses and gap metrics use)."""
        self._check_input(x)
        return self.backbone(x).mean(dim=(2, 3))

    def compute_loss(self, outputs: dict, targets: dict, weights: dict | None = None):
        """``(total, {part: detached tensor})``; weights: head defaults <- config <- ``weights``."""
        return self.head.loss(outputs, targets, loss_weights(self.head_cfg, weights))

    # --- cut point for cached features ---------------------------------------------------------
    @property
    def cut_index(self) -> int:
        """Index of the first backbone stage that is not frozen (= number of stages run by
        :meth:`frozen_part`)."""
        for i, name in enumerate(self.backbone.stage_names):
            if name not in self._frozen:
                return i
        return len(self.backbone.stage_names)

    def _cut(self, cut: int | None) -> int:
        return self.cut_index if cut is None else int(cut)

    def cut_keys(self, cut: int | None = None) -> list[str]:
        """Keys of :meth:`frozen_part`'s dict: ``"cut"`` plus taps computed before the cut
        (``cut``: number of leading stages; default the model's frozen ones)."""
        c = self._cut(cut)
        names = self.backbone.stage_names
        return ["cut"] + [n for n in names[:max(c - 1, 0)] if n in self.tap_names]

    def cut_info(self, cut: int | None = None) -> dict:
        """Identity of the cached-feature layout: features cached under one dict fit only a model
        with the same dict (same backbone weights, cut, taps and input size)."""
        names = self.backbone.stage_names
        c = self._cut(cut)
        return {"backbone": self.backbone.name, "backbone_hash": self.backbone.weights_hash,
                "cut_index": c, "cut_after": names[c - 1] if c else "input", "keys": self.cut_keys(c),
                "input_hw": list(self.input_hw)}

    def frozen_part(self, x: torch.Tensor, cut: int | None = None) -> dict[str, torch.Tensor]:
        """Run the leading ``cut`` stages (default: the frozen ones):
        ``{"cut": input of stage ``cut``, <tap>: ...}``.

        Together these fully determine :meth:`forward_from_cut`'s result, so a trainer can
        compute them once per image and cache them while the frozen part is unchanged.
        Adaptation passes the deepest cut its unfreezing schedule reaches, which lies before
        the model's current one (see :func:`sim2real.adapt.features.advance`).
        """
        c = self._cut(cut)
        taps: dict[str, torch.Tensor] = {}
        out = self.backbone(x, 0, c, taps, self.cut_keys(c)[1:])
        return {"cut": out, **taps}

    def frozen_digest(self, cut: int | None = None) -> str:
        """Hash of the weights and BatchNorm statistics of the leading ``cut`` stages (default: the
        frozen ones) as they are now, not as built: features of a frozen part changed since (e.g.
        by AdaBN) never pass for the original's in a feature cache key."""
        names = self.backbone.stage_names[:self._cut(cut)]
        if not names:
            return "input"
        return state_digests(nn.ModuleList([self.backbone.stages[n] for n in names]))[0]

    def forward_from_cut(self, feats: dict[str, torch.Tensor]) -> dict:
        c = self.cut_index
        names = self.backbone.stage_names
        missing = [k for k in self.cut_keys() if k not in feats]
        if missing:
            raise ValueError(f"forward_from_cut: cached features lack {missing}; they were cached with a "
                             f"different cut (now after {self.cut_info()['cut_after']})")
        want = self.backbone.feature_info[c - 1]["num_chs"] if c else self.backbone.pretrained_cfg["channels"]
        if not torch.jit.is_tracing() and (feats["cut"].dim() != 4 or feats["cut"].shape[1] != want):
            raise ValueError(f"forward_from_cut: cached 'cut' has shape {tuple(feats['cut'].shape)}, expected "
                             f"(B, {want}, h, w) after {self.cut_info()['cut_after']}; the features were "
                             "cached with a different cut")
        taps = {k: v for k, v in feats.items() if k != "cut"}
        if c > 0 and names[c - 1] in self.tap_names:
            taps[names[c - 1]] = feats["cut"]
        self.backbone(feats["cut"], c, None, taps, self.tap_names)
        return self.head(taps)

    # --- freezing -----------------------------------------------------------------------------
    @property
    def frozen_stages(self) -> list[str]:
        return [n for n in self.backbone.stage_names if n in self._frozen]

    def set_frozen(self, stages: Sequence[str]) -> "PerceptionModel":
        """Freeze exactly these backbone stages (names from ``backbone.stage_names``); frozen
        stages get ``requires_grad=False`` and stay in eval mode (BatchNorm statistics kept)."""
        names = self.backbone.stage_names
        unknown = [s for s in stages if s not in names]
        if unknown:
            raise ValueError(f"unknown backbone stages {unknown}; stages of {self.backbone.name}: {names}")
        self._frozen = set(stages)
        for name, mod in self.backbone.stages.items():
            for p in mod.parameters():
                p.requires_grad_(name not in self._frozen)
        for mod in self.backbone.tail.values():  # the ImageNet classifier never trains
            for p in mod.parameters():
                p.requires_grad_(False)
        return self.train(self.training)

    def freeze_backbone(self) -> "PerceptionModel":
        return self.set_frozen(self.backbone.stage_names)

    def unfreeze_last(self, n: int) -> "PerceptionModel":
        """Train the last ``n`` backbone stages (``n < 0`` = all), freeze the rest."""
        names = self.backbone.stage_names
        n = len(names) if n < 0 else min(n, len(names))
        return self.set_frozen(names[:len(names) - n])

    def train(self, mode: bool = True) -> "PerceptionModel":
        super().train(mode)
        for name in self._frozen:
            self.backbone.stages[name].eval()
        self.backbone.tail.eval()
        return self

    def trainable_state_keys(self) -> list[str]:
        """state_dict keys a module checkpoint stores: head + unfrozen backbone stages."""
        keep = []
        for k in self.state_dict():
            if k.startswith("head."):
                keep.append(k)
            elif k.startswith("backbone.stages."):
                if k.split(".")[2] not in self._frozen:
                    keep.append(k)
        return keep

    def param_groups(self, lr: float, backbone_lr_scale: float = 0.1, layer_decay: float = 0.75,
                     weight_decay: float = 1e-4) -> list[dict]:
        """Optimizer groups: head at ``lr``; unfrozen backbone stage i (of n) at
        ``lr * backbone_lr_scale * layer_decay ** (n - 1 - i)`` (earlier = lower). Biases and
        norm weights get no weight decay. Frozen parameters are left out."""
        groups: list[dict] = []

        def add(named, lr_, tag):
            decay = [p for n, p in named if p.requires_grad and p.dim() > 1]
            no_decay = [p for n, p in named if p.requires_grad and p.dim() <= 1]
            if decay:
                groups.append({"params": decay, "lr": lr_, "weight_decay": weight_decay, "name": tag})
            if no_decay:
                groups.append({"params": no_decay, "lr": lr_, "weight_decay": 0.0, "name": f"{tag}/no_decay"})

        add(list(self.head.named_parameters()), lr, "head")
        names = self.backbone.stage_names
        n = len(names)
        for i, name in enumerate(names):
            if name in self._frozen:
                continue
            add(list(self.backbone.stages[name].named_parameters()),
                lr * backbone_lr_scale * layer_decay ** (n - 1 - i), f"backbone.{name}")
        return groups


EXPORT_OUTPUTS = (*MAP_NAMES.values(), "embed")
OPTIONAL_EXPORT_OUTPUTS = ("depth",)   # after EXPORT_OUTPUTS, only from a head built with them


def export_outputs(model: "PerceptionModel") -> tuple[str, ...]:
    """The exported outputs of ``model`` in graph order: ``EXPORT_OUTPUTS`` + the optional maps its head has."""
    return EXPORT_OUTPUTS + tuple(n for n in OPTIONAL_EXPORT_OUTPUTS if getattr(model.head_cfg, n, False))


class ExportModule(nn.Module):
    """``model`` in eval mode returning the tuple ``EXPORT_OUTPUTS`` (the maps + ``embed``; a head
    without corners returns empty corner maps) for ONNX/TorchScript; decoding stays numpy.
    Input: uint8 ``(B, H, W, C)`` frames (``Preprocess.frame``), normalised in the graph
    (``InputNormalize``)."""

    output_names = EXPORT_OUTPUTS

    def __init__(self, model: PerceptionModel):
        super().__init__()
        self.model = model
        self.output_names = export_outputs(model)
        self.normalize = model.make_preprocess().normalizer()
        self.eval()

    def train(self, mode: bool = True) -> "ExportModule":
        # torch.onnx.export restores the wrapper's mode afterwards; never let that be training.
        return super().train(False)

    def forward(self, x: torch.Tensor):
        out = self.model(self.normalize(x))
        return tuple(out[k] if k in out else out["offset"][:, :0] for k in self.output_names)


def build_model(cfg: ModelConfig, classes: Sequence[str], image_hw: Sequence[int] | None = None,
                backbone: Backbone | None = None) -> PerceptionModel:
    """Backbone from ``cfg`` (or a shared prebuilt one), head, input size and freezing.

    ``image_hw`` (the camera/dataset image size) sets the aspect ratio when ``cfg.input_hw``
    is not given."""
    bb = backbone or build_backbone(cfg.backbone, cfg.weights)
    input_hw = resolve_input_hw(bb.pretrained_cfg, cfg.input_hw, cfg.input_short_side, image_hw)
    model = PerceptionModel(bb, classes, cfg.head, input_hw, cfg.resize)
    model.unfreeze_last(cfg.trainable_blocks)
    return model


def head_config_from_dict(d: dict) -> HeadConfig:
    """A stored head config (checkpoints store every field)."""
    known = {f for f in HeadConfig.__dataclass_fields__}
    unknown = [k for k in d if k not in known]
    if unknown:
        raise ValueError(f"head config has unknown keys {unknown}; known: {sorted(known)}")
    cfg = HeadConfig(**d)
    cfg.validate()
    return cfg


def head_config_to_dict(cfg: HeadConfig) -> dict:
    return asdict(cfg)
