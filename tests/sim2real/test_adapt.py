"""Adaptation building blocks: L2-SP, unfreezing schedule, cached-feature cut, alignment reach,
model selection, negative-transfer check, config validation (real EfficientNet-Lite0, tiny inputs)."""

from __future__ import annotations

import copy

import pytest
import torch

from sim2real.adapt.alignment import build_alignment
from sim2real.adapt.config import AdaptConfig, parse_methods
from sim2real.adapt.features import AlignTap, advance
from sim2real.adapt.l2sp import L2SP
from sim2real.adapt.selection import (
    RULE_TEXT,
    negative_transfer_warnings,
    selection_basis,
    selection_score,
    selection_value,
)
from sim2real.adapt.unfreeze import UnfreezeSchedule
from sim2real.config import ConfigError, load_config
from sim2real.engine import BestSelector
from sim2real.models import HeadConfig, PerceptionModel, build_backbone
from sim2real.paths import REPO_ROOT

HW = (48, 64)


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def make_model(backbone) -> PerceptionModel:
    torch.manual_seed(0)
    return PerceptionModel(copy.deepcopy(backbone), ["cube", "ball"], HeadConfig(width=16), HW)


def test_l2sp_is_zero_at_start_and_grows_with_the_distance_moved(lite0):
    model = make_model(lite0).unfreeze_last(1)
    l2sp = L2SP(model, weight=0.1)
    assert l2sp.penalty().item() == 0.0
    last = model.backbone.stage_names[-1]
    p = next(model.backbone.stages[last].parameters())
    with torch.no_grad():
        p.add_(0.01)
    small = l2sp.penalty().item()
    assert small == pytest.approx(0.5 * 0.1 * 0.01 ** 2 * p.numel(), rel=1e-3)
    with torch.no_grad():
        p.add_(0.02)
    assert l2sp.penalty().item() == pytest.approx(9 * small, rel=1e-3)  # (0.03 / 0.01)^2
    # The penalty's gradient pulls the moved weights back towards the start.
    l2sp.penalty().backward()
    assert (p.grad > 0).all()
    # Frozen parameters do not count, even when they differ from the start.
    model.freeze_backbone()
    assert l2sp.penalty().item() == 0.0


def test_l2sp_include_filters_parameters(lite0):
    model = make_model(lite0).unfreeze_last(1)
    l2sp = L2SP(model, 1.0, include=lambda n: n.startswith("backbone."))
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(1.0)
    assert l2sp.penalty().item() == 0.0


def test_unfreezing_schedule_unfreezes_the_right_stages_at_the_right_epochs(lite0):
    model = make_model(lite0)
    names = model.backbone.stage_names
    sched = UnfreezeSchedule(names, epochs=[2, 4], per_step=1)
    assert sched.deepest_cut == len(names) - 2
    seen = {}
    for epoch in range(6):
        new = sched.apply(model, epoch)
        trainable = [n for n in names if n not in model.frozen_stages]
        seen[epoch] = (trainable, new)
        for n in names:  # requires_grad follows the schedule, stage by stage
            flags = {p.requires_grad for p in model.backbone.stages[n].parameters()}
            assert flags == {n in trainable}
        assert all(p.requires_grad for p in model.head.parameters())
    assert seen[0] == ([], []) and seen[1] == ([], [])
    assert seen[2] == ([names[-1]], [names[-1]])           # head -> last block
    assert seen[3] == ([names[-1]], [])
    assert seen[4] == (names[-2:], [names[-2]])            # -> the block before it
    assert sched.describe(6) == [{"epoch": 0, "trainable": ["head"]}, {"epoch": 2, "trainable": ["head", names[-1]]},
                                 {"epoch": 4, "trainable": ["head"] + names[-2:]}]
    assert UnfreezeSchedule(names, [1], per_step=3, start=1).trainable_stages(1) == names[-4:]
    assert UnfreezeSchedule(names, [0, 1, 2], per_step=5).num_trainable(9) == len(names)  # capped


def test_features_cached_at_the_deepest_cut_reproduce_the_full_forward(lite0):
    model = make_model(lite0).eval()
    sched = UnfreezeSchedule(model.backbone.stage_names, epochs=[1, 2], per_step=1)
    cut = sched.deepest_cut
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cached = model.frozen_part(x, cut)
        for epoch in (0, 1, 2):
            sched.apply(model, epoch)
            model.eval()
            out = model.forward_from_cut(advance(model, cached, cut))
            ref = model(x)
            maps = ("heatmap", "offset", "ltrb", "kp_reg", "kp_heatmap", "kp_offset", "embed")
            for k in maps:
                assert out[k].shape == ref[k].shape and torch.allclose(out[k], ref[k], atol=1e-4), (epoch, k)
    model.unfreeze_last(3)  # deeper than the cache: refuse instead of computing garbage
    with pytest.raises(ValueError, match="cached after stage"):
        advance(model, cached, cut)


def test_neck_alignment_reaches_trainable_parameters_with_a_frozen_backbone(lite0):
    model = make_model(lite0).freeze_backbone().train()
    tap = AlignTap(model, "neck")
    x = torch.randn(8, 3, *HW, generator=torch.Generator().manual_seed(2))
    out = model(x)
    f = tap(out)
    assert f.shape == (8, tap.dim) and f.requires_grad
    loss = build_alignment("coral", tap.dim)(f[:4], f[4:] + 1.0)
    loss.backward()
    moved = [n for n, p in model.head.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert moved, "alignment gradient reached no head parameter"
    tap.close()
    # The backbone embedding of a frozen backbone has nothing trainable behind it.
    emb = AlignTap(model, "embed")(model(x))
    assert not emb.requires_grad


def test_selector_keeps_the_best_state_and_stops_after_patience():
    sel = BestSelector("min", patience=2)  # what AdaptSession uses: selection scores are minimised
    w = torch.zeros(1)
    assert sel.update(0, selection_score("real_val", {"center_err_px_median": 10.0, "box_iou_mean": 0.5}, None),
                      {"w": w})
    w += 1
    assert sel.update(1, selection_score("real_val", {"center_err_px_median": 8.0, "box_iou_mean": 0.4}, None),
                      {"w": w})
    w += 1
    assert not sel.update(2, selection_score("real_val", {"center_err_px_median": 9.0, "box_iou_mean": 0.6}, None),
                          {"w": w})
    assert not sel.should_stop
    assert not sel.update(3, None, {"w": w})
    assert sel.should_stop and sel.best_epoch == 1 and float(sel.best_state["w"]) == 1.0
    # Equal error: higher IoU wins.
    assert selection_score("real_val", {"center_err_px_median": 5, "box_iou_mean": 0.9}, None) < \
        selection_score("real_val", {"center_err_px_median": 5, "box_iou_mean": 0.1}, None)
    lf = BestSelector("min")
    lf.update(0, selection_score("label_free", None, 0.3), {})
    lf.update(1, selection_score("label_free", None, 0.1), {})
    assert lf.best_epoch == 1 and "LABEL-FREE" in RULE_TEXT["label_free"]
    with pytest.raises(ValueError, match="unknown selection rule"):
        selection_score("best_guess", None, 0.1)


def test_real_val_selection_ranks_by_ap50_and_falls_back_when_it_is_undefined():
    nan = float("nan")
    detects_all = selection_score("real_val", {"ap50": 0.6, "center_err_px_median": 3.0, "box_iou_mean": 0.6}, None)
    detects_one = selection_score("real_val", {"ap50": 0.1, "center_err_px_median": 0.5, "box_iou_mean": 0.9}, None)
    nothing_matched = selection_score("real_val", {"ap50": 0.1, "center_err_px_median": nan, "box_iou_mean": nan},
                                      None)
    assert detects_all < detects_one < nothing_matched  # AP50 first; equal AP50: a matched instance first
    # Equal AP50: the epoch that reports more objects at the score threshold wins over a lower centre error.
    finds_all = selection_score("real_val", {"ap50": 1.0, "recall@thr": 1.0, "center_err_px_median": 3.0}, None)
    finds_most = selection_score("real_val", {"ap50": 1.0, "recall@thr": 0.8, "center_err_px_median": 2.0}, None)
    assert finds_all < finds_most
    assert selection_basis("real_val", detects_all) == "ap50" and selection_value("real_val", detects_all) == 0.6
    # AP50 undefined (no labelled instance in val): the centre error decides, and says so; AP50 still wins.
    fallback = selection_score("real_val", {"ap50": nan, "center_err_px_median": 1.0, "box_iou_mean": 0.5}, None)
    assert selection_basis("real_val", fallback) == "center_err_px_median"
    assert selection_value("real_val", fallback) == 1.0 and nothing_matched < fallback
    assert selection_score("real_val", {"ap50": nan, "center_err_px_median": nan}, None) is None
    assert selection_basis("label_free", selection_score("label_free", None, 0.2)) == "align_mmd"


def test_negative_transfer_warnings_name_the_baseline_and_metric():
    adapted = {"center_err_px_median": 12.0, "box_iou_mean": 0.7}
    msgs = negative_transfer_warnings(adapted, {"source-only": {"center_err_px_median": 10.0, "box_iou_mean": 0.6},
                                                "real-only fine-tune": {"center_err_px_median": 20.0,
                                                                        "box_iou_mean": 0.5}})
    assert len(msgs) == 1 and "source-only" in msgs[0] and "center_err_px_median 12 vs 10" in msgs[0]
    assert negative_transfer_warnings(adapted, {"source-only": {"center_err_px_median": 13.0,
                                                                "box_iou_mean": 0.6}}) == []
    assert negative_transfer_warnings(None, {"source-only": adapted}) == []
    # AP50 counts too, and an adapted model whose detections match nothing is worse than one that localises.
    msgs = negative_transfer_warnings({"ap50": 0.1, "center_err_px_median": float("nan"), "box_iou_mean": float("nan")},
                                      {"source-only": {"ap50": 0.3, "center_err_px_median": 2.0, "box_iou_mean": 0.6}})
    assert len(msgs) == 1 and "ap50 0.1 vs 0.3" in msgs[0] and "center_err_px_median undefined" in msgs[0]
    assert negative_transfer_warnings({"ap50": 0.5}, {"source-only": {"ap50": 0.3, "center_err_px_median": 2.0}}) == []


def test_config_methods_combine_and_bad_values_name_the_key(tmp_path):
    cfg = load_config(AdaptConfig, None, ["methods=[adabn,coral]", "checkpoint=x.pt"])
    assert cfg.methods == ["adabn", "coral"] and cfg.selection_rule() == "real_val"
    assert parse_methods("adabn+mmd") == ["adabn", "mmd"]
    assert load_config(AdaptConfig, None, ["k=0"]).selection_rule() == "label_free"
    bad = [(["methods=[coral,fancy]"], "methods"), (["methods=[]"], "methods"),
           (["methods=[mmd,mmd]"], "methods"), (["real_labels=null", "k=5"], "'k'"),
           (["k=0", "selection=real_val"], "selection"), (["align_features=pixels"], "align_features"),
           (["real_labels=null", "k=0"], "unlabelled.source"), (["lr=0"], "lr"),
           (["unlabelled.frames=[10,5]"], "unlabelled.frames")]
    for overrides, key in bad:
        with pytest.raises(ConfigError, match=key):
            load_config(AdaptConfig, None, overrides)
    # the shipped YAML loads as is
    load_config(AdaptConfig, str(REPO_ROOT / "configs/adapt.yaml"))
