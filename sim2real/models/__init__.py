"""Perception models: pretrained backbones, the one preprocessing, heads, freezing, checkpoints.

Quick tour (all names importable from ``sim2real.models``)::

    bb = build_backbone("efficientnet_lite0")        # weights: "default" | "none" | "download" | <path>
    bb.stage_names      # ['stem', 'blocks_0', ..., 'blocks_6', 'conv_head'] (freeze units)
    bb.feature_info     # [{'name', 'num_chs', 'reduction'}] per stage
    bb.pretrained_cfg   # {'input_size', 'mean', 'std', 'interpolation', 'channels'}

    cfg = ModelConfig(head=HeadConfig(type="dense"))  # nest in a stage config: model: ModelConfig
    model = build_model(cfg, classes=["cube"], image_hw=(480, 640))   # or PerceptionModel(bb, ...)
    pre = model.make_preprocess()                    # == Preprocess(bb.pretrained_cfg, model.input_hw)
    x, meta = pre(img)                               # HxW/HxWxC uint8/uint16 -> (3, H', W'), meta
    out = model(x[None])                             # maps: heatmap (B,C,h,w), offset, ltrb, kp_reg,
                                                     # kp_heatmap, kp_offset; embed; raw (logits)
    total, parts = model.compute_loss(out, targets)  # padded instances in model-input px (meta.to_input /
                                                     # meta.box_to_input): label (B,M) (-1 = none),
                                                     # center (B,M,2), box (B,M,4), keypoints (B,M,K,3),
                                                     # ignore (B,M), has_loc (B,)
    model.embed(x[None])                             # (B, D) pooled features
    # instances: sim2real.eval.instances.decode_maps(numpy maps, **model.decode_options())
    resolve_device("auto")                           # torch.device for a config's device: auto|cpu|cuda

Freezing and cached features::

    model.freeze_backbone(); model.unfreeze_last(2)   # or set_frozen([...stage names])
    opt = torch.optim.AdamW(model.param_groups(lr=1e-3, backbone_lr_scale=0.1, layer_decay=0.75))
    model.train()                                     # frozen stages stay in eval (BN stats kept)
    feats = model.frozen_part(x)                      # {"cut": ..., <early taps>}: cache these
    out = model.forward_from_cut(feats)               # == model(x)
    model.cut_info()                                  # key the cache on this (hash, cut, input size)
    model.frozen_digest()                             # ... and on the frozen weights as they are now
    model.frozen_part(x, cut=2)                       # the first 2 stages, whatever is frozen

Checkpoints::

    save_checkpoint("best.pt", model, extra={"epoch": 3})             # module: head + trained blocks
    save_checkpoint("full.pt", model, full=True)                      # everything
    model = load_checkpoint("best.pt")                                # or backbone=<shared Backbone>
    read_checkpoint_meta("best.pt")                                   # classes, input_hw, preprocess...

Errors: unknown backbone -> ``UnknownBackboneError`` (ValueError, lists close names); missing
offline weights -> ``WeightsNotFoundError`` (FileNotFoundError, names the file, suggests
``weights=none``); checkpoint on the wrong backbone -> ``CheckpointError`` (ValueError).
"""

from sim2real.models.backbone import Backbone, BackboneSplitError
from sim2real.models.checkpoint import (
    CheckpointError, load_checkpoint, read_checkpoint, read_checkpoint_meta, save_checkpoint,
)
from sim2real.models.device import resolve_device
from sim2real.models.heads import DENSE_LOSS_WEIGHTS, HeadConfig, encode_targets, loss_weights
from sim2real.models.perception import ModelConfig, PerceptionModel, build_model
from sim2real.models.preprocess import Preprocess, PreprocessMeta, fit_input_hw, resolve_input_hw
from sim2real.models.registry import (
    DEFAULT_BACKBONE, UnknownBackboneError, build_backbone, list_backbones, register_backbone,
)
from sim2real.models.tasks import TASK_PARTS, task_loss_weights
from sim2real.models.weights import WeightsNotFoundError

__all__ = [
    "Backbone", "BackboneSplitError", "CheckpointError", "DEFAULT_BACKBONE", "DENSE_LOSS_WEIGHTS",
    "encode_targets", "HeadConfig", "ModelConfig", "PerceptionModel", "Preprocess", "PreprocessMeta",
    "UnknownBackboneError", "WeightsNotFoundError", "build_backbone", "build_model",
    "fit_input_hw", "list_backbones", "load_checkpoint", "loss_weights", "read_checkpoint", "read_checkpoint_meta",
    "register_backbone", "resolve_device", "resolve_input_hw", "save_checkpoint", "TASK_PARTS", "task_loss_weights",
]
