"""``sim2real compare``: every method on one budget -> compare.md + compare.csv (tiny sets)."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch

from sim2real.adapt.compare import CompareConfig, acceptance, run_compare, to_csv, to_markdown
from sim2real.config import ConfigError, load_config
from sim2real.io import read_jsonl
from sim2real.models import HeadConfig, PerceptionModel, build_backbone, save_checkpoint
from sim2real.train.toy_data import SHAPES, write_shapes_dataset
from sim2real.paths import REPO_ROOT

METHODS = ["finetune", "coral", "mmd", "dann", "adabn", "adabn+coral"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare_world")
    bb = build_backbone("efficientnet_lite0")
    sim = write_shapes_dataset(root / "sim", 16, (64, 48), seed=0)
    real = write_shapes_dataset(root / "real", 30, (64, 48), seed=1, gray=True)
    torch.manual_seed(0)
    model = PerceptionModel(copy.deepcopy(bb), list(SHAPES), HeadConfig(width=16), (48, 64))
    ckpt = save_checkpoint(root / "sim.pt", model.freeze_backbone())
    return {"root": root, "bb": bb, "sim": sim, "real": real, "ckpt": ckpt}


def _cfg(world, run_dir, methods, ks) -> CompareConfig:
    return load_config(CompareConfig, None, [
        f"run_dir={run_dir}", "methods=[" + ",".join(methods) + "]", f"ks={ks}", "title=toy",
        f"adapt.checkpoint={world['ckpt']}", f"adapt.sim_dataset={world['sim']}",
        f"adapt.real_labels={world['real'] / 'annotations.json'}", f"adapt.cache_dir={world['root'] / 'cache'}",
        "adapt.n_val=4", "adapt.n_test=5", "adapt.split_gap=1", "adapt.epochs=1", "adapt.steps_per_epoch=1",
        "adapt.batch_size_sim=4", "adapt.batch_size_real=2", "adapt.batch_size_unlabelled=4", "adapt.real_views=1",
        "adapt.unfreeze_epochs=[]", "adapt.sim_val_max=4",
            "adapt.sim_val_fraction=0.3", "adapt.domain_check_samples=4",
        "adapt.progress=false", "adapt.tracking.mode=disabled"])


def test_compare_writes_markdown_and_csv_with_every_method_row(world, tmp_path):
    res = run_compare(_cfg(world, tmp_path / "cmp", METHODS, [3]), backbone=world["bb"])
    names = ["source-only", "real-only fine-tune"] + METHODS
    assert [(r["k"], r["method"]) for r in res.rows] == [(3, n) for n in names]
    md = res.markdown.read_text()
    for n in names:
        assert f"| {n} |" in md
    assert "real AP50" in md and "real centre err px (median)" in md and "Machine:" in md and "frames 25–29" in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| k | method"))
    assert all(ln.count("|") == header.count("|") for ln in md.splitlines() if ln.startswith("| 3 |"))
    rows = list(csv.DictReader(res.csv.open()))
    assert [r["method"] for r in rows] == names
    for r in rows:
        # AP is defined whenever the frames hold labelled instances, trained model or not.
        for col in ("real/ap50", "real/ap", "sim/ap50", "gap/ap50", "wall_s"):
            assert r[col] != "", (r["method"], col)
        assert 0.0 <= float(r["real/ap50"]) <= 1.0 and float(r["wall_s"]) > 0
        # The matched-instance metrics are empty only when nothing detected at score_thresh matched
        # (these models are barely trained); when present they are numbers in range.
        for col in ("real/center_err_px_median", "real/box_iou_mean", "sim/center_err_px_median"):
            assert r[col] == "" or float(r[col]) >= 0.0, (r["method"], col)
        assert r["real/box_iou_mean"] == "" or float(r["real/box_iou_mean"]) <= 1.0
    assert {r["selection"] for r in rows if r["kind"] == "adapted"} == {"real_val"}
    logged = read_jsonl(res.run_dir / "metrics.jsonl")
    assert len(logged) == len(rows) and {r["method"] for r in logged} == set(names)
    for sub in ["source_only", "real_only", "finetune", "adabn_coral"]:
        assert (res.run_dir / "k03" / sub / "result.json").is_file()
        assert (res.run_dir / "k03" / sub / "report.html").is_file(), sub
        assert "gap/feat_mmd" in json.loads((res.run_dir / "k03" / sub / "summary.json").read_text())
    assert res.acceptance[3]["available"] and isinstance(res.acceptance[3]["beats_source_only"], bool)


@pytest.mark.slow
def test_compare_several_k_share_splits_and_caches(world, tmp_path):
    res = run_compare(_cfg(world, tmp_path / "cmp", ["coral"], [2, 5]), backbone=world["bb"])
    assert [(r["k"], r["method"]) for r in res.rows] == [(k, n) for k in (2, 5)
                                                         for n in ("source-only", "real-only fine-tune", "coral")]
    src = [r for r in res.rows if r["kind"] == "source_only"]
    real = [{k: v for k, v in r.items() if k.startswith("real/")} for r in src]
    assert "real/ap50" in real[0] and real[0] == real[1]  # same test split
    assert set(res.acceptance) == {2, 5}


def test_acceptance_picks_best_adapted_by_validation_not_test():
    rows = [{"k": 5, "method": "source-only", "kind": "source_only", "real/center_err_px_median": 10.0,
             "real/box_iou_mean": 0.5},
            {"k": 5, "method": "coral", "kind": "adapted", "real/center_err_px_median": 4.0,
             "real/box_iou_mean": 0.7, "real_val/center_err_px_median": 6.0},
            {"k": 5, "method": "mmd", "kind": "adapted", "real/center_err_px_median": 3.0,
             "real/box_iou_mean": 0.4, "real_val/center_err_px_median": 7.0}]
    acc = acceptance(rows)
    assert acc["best"] == "coral" and acc["picked_by"] == "real val" and acc["beats_source_only"]
    rows[1]["real/box_iou_mean"] = 0.45
    assert not acceptance(rows)["beats_source_only"]
    md = to_markdown(rows, "t", {"machine": "m", "date": "d", "seed": 0, "budget": "b", "test_frames": "f",
                                 "image_size": "640x480", "sim_val": 3, "acceptance": {5: acceptance(rows)}})
    assert "does NOT beat" in md and md.count("\n| 5 |") == 3
    assert to_csv(rows).splitlines()[0].startswith("k,method,kind")


def test_acceptance_compares_ap50_when_rows_have_it():
    rows = [{"k": 5, "method": "source-only", "kind": "source_only", "real/ap50": 0.2, "real/center_err_px_median": 2.0,
             "real/box_iou_mean": 0.6},
            {"k": 5, "method": "coral", "kind": "adapted", "real/ap50": 0.4, "real_val/ap50": 0.5,
             "real/center_err_px_median": 2.5, "real/box_iou_mean": 0.55},
            {"k": 5, "method": "mmd", "kind": "adapted", "real/ap50": 0.6, "real_val/ap50": 0.3}]
    acc = acceptance(rows)  # chosen by val AP50; beats on test AP50 though its matched errors are worse
    assert acc["best"] == "coral" and acc["metric"] == "ap50" and acc["ap50"] == [0.4, 0.2] and acc["beats_source_only"]
    rows[1]["real/ap50"] = 0.2
    assert not acceptance(rows)["beats_source_only"]


def test_acceptance_without_labels_picks_the_method_by_the_label_free_rule():
    rows = [{"k": 0, "method": "source-only", "kind": "source_only", "real/center_err_px_median": 10.0,
             "real/box_iou_mean": 0.5},
            {"k": 0, "method": "adabn", "kind": "adapted", "selection": "label_free", "gap/feat_mmd": 0.5,
             "real/center_err_px_median": 8.0, "real/box_iou_mean": 0.6, "real_val/center_err_px_median": 7.0},
            {"k": 0, "method": "mmd", "kind": "adapted", "selection": "label_free", "gap/feat_mmd": 0.05,
             "real/center_err_px_median": 12.0, "real/box_iou_mean": 0.4, "real_val/center_err_px_median": 11.0}]
    acc = acceptance(rows)  # the validation labels must not pick the method when k = 0
    assert acc["best"] == "mmd" and acc["picked_by"] == "label-free MMD" and not acc["beats_source_only"]


def test_compare_config_rejects_unknown_methods():
    with pytest.raises(ConfigError, match="methods"):
        load_config(CompareConfig, None, ["methods=[coral,magic]"])
    with pytest.raises(ConfigError, match="methods"):
        load_config(CompareConfig, None, ["methods=[coral,coral]"])
    cfg = load_config(CompareConfig, str(REPO_ROOT / "configs/compare.yaml"))
    assert cfg.k_values() == [5, 10, 20] and set(cfg.methods) == {"finetune", "coral", "mmd", "dann", "adabn"}


def test_compare_child_runs_get_group_and_names_and_no_wandb_flag(world, tmp_path, monkeypatch):
    import dataclasses

    from sim2real.adapt import compare as compare_mod
    from sim2real.cli import main

    seen = []
    real = compare_mod.AdaptSession.adapt

    def spy(self, methods, run_dir=None, name=None, report=True, tracking=None):
        seen.append(dataclasses.asdict(tracking))
        return real(self, methods, run_dir, name=name, tracking=tracking)

    monkeypatch.setattr(compare_mod.AdaptSession, "adapt", spy)
    out = tmp_path / "cmpcli"
    cfg = _cfg(world, out, ["finetune"], [2])
    args = ["compare", "--from", str(world["ckpt"]), "--run-dir", str(out), "--no-wandb",
            "methods=[finetune]", "ks=[2]", "adapt.tracking.mode=offline",
            *[f"adapt.{k}={v}" for k, v in (("sim_dataset", cfg.adapt.sim_dataset),
                                            ("real_labels", cfg.adapt.real_labels),
                                            ("cache_dir", cfg.adapt.cache_dir))],
            "adapt.n_val=4", "adapt.n_test=5", "adapt.split_gap=1", "adapt.epochs=1", "adapt.steps_per_epoch=1",
            "adapt.batch_size_sim=4", "adapt.batch_size_real=2", "adapt.batch_size_unlabelled=4",
            "adapt.real_views=1", "adapt.unfreeze_epochs=[]", "adapt.sim_val_max=4",
            "adapt.sim_val_fraction=0.3", "adapt.domain_check_samples=4",
            "adapt.progress=false"]
    assert main(args) == 0
    assert seen and seen[0]["mode"] == "disabled"  # --no-wandb wins over the config's mode
    assert seen[0]["group"] == "cmpcli" and seen[0]["name"] == "cmpcli/k2/finetune"
    assert not list(out.rglob("wandb"))
    for sub in ("source_only", "real_only", "finetune"):
        assert (out / "k02" / sub / "report.html").is_file(), sub


@pytest.fixture()
def one_thread():
    """Float sums depend on the thread count; the bounds below are measured at one thread, so the
    test gives the same numbers under any OMP_NUM_THREADS."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inverted_world(tmp_path_factory):
    """A known, learnable shift: sim = colour shapes; real = other scenes of the same shapes with every
    pixel inverted (255 - v). The source model is trained on sim only (cached features, frozen backbone)."""
    import cv2

    from sim2real.train.config import TrainConfig
    from sim2real.train.trainer import train

    root = tmp_path_factory.mktemp("inverted_world")
    sim = write_shapes_dataset(root / "sim", 60, (64, 48), seed=0)
    real = write_shapes_dataset(root / "real", 40, (64, 48), seed=1)
    for p in sorted((real / "images").glob("*.png")):
        cv2.imwrite(str(p), 255 - cv2.imread(str(p)))
    base = {"datasets": f"[{sim}]", "run_dir": str(root / "train"), "cache_dir": str(root / "cache"),
            "model.input_hw": "[48,64]", "model.head.type": "dense", "epochs": 8, "batch_size": 16,
            "lr": 3e-3, "tracking.mode": "disabled", "progress": "false", "patience": 0, "seed": 0,
            # the source model this test's bounds were measured with (best by val loss, GIoU weight 1,
            # stride 16: the stride-8 default transfers to the inverted frames well enough (AP50 0.62)
            # that fine-tuning has little left to win, which is not what this test is about)
            "monitor": "loss", "model.head.loss_weights.giou": 1.0, "model.head.stride": 16}
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_thread
    try:
        src = train(load_config(TrainConfig, None, [f"{k}={v}" for k, v in base.items()]))
    finally:
        torch.set_num_threads(before)
    assert src.best["ap50"] > 0.2 and src.best["center_err_px_median"] < 4.0, src.best  # learned sim (untrained: ~0.01)
    return {"root": root, "sim": sim, "real": real, "ckpt": root / "train" / "best.pt"}


def test_kshot_finetune_beats_source_only_on_inverted_real_frames(inverted_world, one_thread):
    w = inverted_world
    cfg = load_config(CompareConfig, None, [
        f"run_dir={w['root'] / 'cmp'}", "methods=[finetune]", "ks=[10]", "title=inverted",
        f"adapt.checkpoint={w['ckpt']}", f"adapt.sim_dataset={w['sim']}",
        f"adapt.real_labels={w['real'] / 'annotations.json'}", f"adapt.cache_dir={w['root'] / 'cache'}",
        "adapt.n_val=8", "adapt.n_test=12", "adapt.split_gap=1", "adapt.epochs=3", "adapt.steps_per_epoch=5",
        "adapt.batch_size_sim=8", "adapt.batch_size_real=8", "adapt.batch_size_unlabelled=8",
        "adapt.real_views=1", "adapt.unfreeze_epochs=[]", "adapt.sim_val_max=8", "adapt.sim_val_fraction=0.2",
        "adapt.domain_check_samples=4", "adapt.progress=false", "adapt.tracking.mode=disabled", "adapt.seed=0"])
    res = run_compare(cfg)
    acc = res.acceptance[10]
    rows = {r["method"]: r for r in res.rows}
    src, ft = rows["source-only"], rows["finetune"]
    # Measured (seed 0, 12 real test frames, issue 12 detector): source-only AP50 0.199, AP 0.033;
    # 10-shot fine-tune (best epoch by real val AP50: the last) AP50 0.397, AP 0.077; the matched
    # instances' IoU 0.58-0.59 on both. Bounds leave a margin.
    assert acc["available"] and acc["best"] == "finetune" and acc["beats_source_only"], acc
    assert ft["real/ap50"] > src["real/ap50"] + 0.05, (ft, src)   # measured 0.29 vs 0.22
    # AP over IoU 0.5:0.95 is not asserted: a 3-epoch fine-tune on 8 frames finds the objects (AP50) but its
    # boxes are not tighter (measured AP 0.05-0.08 for both, either way round depending on the thread count).
    assert ft["real/box_iou_mean"] > 0.5, (ft, src)  # what it detects it still localises
    assert "does NOT beat" not in res.markdown.read_text()
