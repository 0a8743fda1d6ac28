"""End-to-end adaptation runs on tiny sets: every method, baselines, label-free selection,
negative-transfer warning, the CLI, the ViSP default data and bad inputs."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from sim2real.adapt.config import AdaptConfig
from sim2real.adapt.data import AdaptData
from sim2real.adapt.trainer import AdaptSession, NegativeTransferWarning, RunResult
from sim2real.cli import main
from sim2real.config import load_config
from sim2real.data.real import ClassMappingError, RealDataError
from sim2real.data.real_footage import FootageError
from sim2real.io import read_jsonl
from sim2real.models import HeadConfig, PerceptionModel, build_backbone, load_checkpoint, save_checkpoint
from sim2real.train.toy_data import SHAPES, write_shapes_dataset

HW = (48, 64)
FAST = ["k=4", "n_val=6", "n_test=6", "split_gap=1", "epochs=2", "steps_per_epoch=2", "batch_size_sim=4",
        "batch_size_real=4", "batch_size_unlabelled=4", "unfreeze_epochs=[1]", "real_views=1", "patience=0",
        "progress=false", "tracking.mode=disabled", "domain_check_samples=4", "sim_val_max=6"]


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def world(tmp_path_factory, lite0):
    """Colour sim shapes, grayscale 'real' shapes (a 40-frame sequence), an untrained checkpoint."""
    root = tmp_path_factory.mktemp("adapt_world")
    sim = write_shapes_dataset(root / "sim", 24, (64, 48), seed=0)
    real = write_shapes_dataset(root / "real", 40, (64, 48), seed=1, gray=True)
    torch.manual_seed(0)
    model = PerceptionModel(copy.deepcopy(lite0), list(SHAPES), HeadConfig(width=16), HW).freeze_backbone()
    ckpt = save_checkpoint(root / "sim.pt", model)
    return {"root": root, "sim": sim, "real": real, "ckpt": ckpt}


def make_cfg(world, run_dir, *extra) -> AdaptConfig:
    return load_config(AdaptConfig, None, [f"checkpoint={world['ckpt']}", f"sim_dataset={world['sim']}",
                                           f"real_labels={world['real'] / 'annotations.json'}",
                                           f"cache_dir={world['root'] / 'cache'}", f"run_dir={run_dir}",
                                           *FAST, *extra])


@pytest.fixture(scope="module")
def session(world, lite0):
    sess = AdaptSession(make_cfg(world, world["root"] / "runs" / "session"), backbone=lite0)
    sess.source_only()
    return sess


def _last_state(run_dir) -> dict:
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=True, map_location="cpu")
    state = ck.get("model", ck.get("state", ck)) if isinstance(ck, dict) else ck
    return {k: v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}


@pytest.mark.parametrize("methods", [["finetune"], ["coral"], ["mmd"], ["dann"], ["adabn"], ["adabn", "coral"]])
def test_adapt_runs_each_method_and_writes_checkpoint_and_metrics(session, lite0, methods):
    run_dir = session.out / "_".join(methods)
    res = session.adapt(methods, run_dir)
    assert res.kind == "adapted" and res.selection == "real_val" and res.epochs_run == 2
    for name in ("best.pt", "checkpoint.pt", "metrics.jsonl", "result.json", "config.yaml", "run_info.json",
                 "summary.json", "unfreeze_schedule.json"):
        assert (run_dir / name).is_file(), name
    model = load_checkpoint(run_dir / "best.pt", backbone=lite0)
    assert model.input_hw == HW and model.classes == list(SHAPES)
    records = read_jsonl(run_dir / "metrics.jsonl")
    epochs = [r for r in records if r.get("split") == "val"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    # AP is defined on labelled frames whatever the model detects; the matched-instance metrics
    # (centre error, IoU) are left out of a record when nothing this untrained head detects matches.
    assert all("real/ap50" in r and "sim/ap50" in r and "gap/ap50" in r and "gap/feat_mmd" in r
               and "align/feat_mmd" in r and r["selection/by"] == "ap50" for r in epochs)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "gap/feat_pad" in summary and "gap/feat_frechet" in summary  # final: every distance
    assert (run_dir / "report.html").is_file()
    trained = epochs[1:]
    assert all(np.isfinite(r["loss/sim"]) and np.isfinite(r["loss/real"]) for r in trained)
    assert epochs[2]["trainable_stages"] == 1 and epochs[1]["trainable_stages"] == 0  # unfrozen at epoch index 1
    if set(methods) & {"coral", "mmd", "dann"}:
        assert all("loss/align" in r for r in trained)
        # A real aligner: a positive loss that moves between epochs, its own diagnostics, and weights that
        # differ from the same run (same batches, same seed) with the alignment term switched off.
        assert all(r["loss/align"] > 1e-6 for r in trained), [r["loss/align"] for r in trained]
        assert trained[0]["loss/align"] != trained[1]["loss/align"]
        for m in set(methods) & {"coral", "mmd", "dann"}:
            assert all(r[f"align/{m}/value"] > 1e-6 for r in trained), m
        weight = session.cfg.align_weight
        try:
            session.cfg.align_weight = 0.0
            session.adapt(methods, session.out / ("_".join(methods) + "_no_align"))
        finally:
            session.cfg.align_weight = weight
        with_align = _last_state(run_dir)
        without = _last_state(session.out / ("_".join(methods) + "_no_align"))
        differ = [k for k in with_align if not torch.equal(with_align[k], without[k])]
        assert differ, "alignment changed no weight"
    else:
        assert not any("loss/align" in r for r in trained)
    if "adabn" in methods:
        assert any("adabn/mean_shift" in r for r in records)
    assert records[-1]["split"] == "test" and records[-1]["epoch"] == res.best_epoch
    assert res.real_test["n"] == 6 and 0.0 <= res.real_test["ap50"] <= 1.0
    iou = res.real_test["box_iou_mean"]  # NaN = no detection at score_thresh matched
    assert np.isnan(iou) or 0.0 <= iou <= 1.0
    assert res.selected_by == "ap50" and epochs[res.best_epoch]["real/ap50"] == max(r["real/ap50"] for r in epochs)
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["selection_rule"].startswith("highest box AP50") and saved["selected_by"] == "ap50"


def test_runs_are_reproducible_for_a_seed(session):
    a = session.adapt(["coral"], session.out / "repro_a")
    b = session.adapt(["coral"], session.out / "repro_b")
    assert a.real_test == b.real_test and a.sim_val == b.sim_val
    sd_a = torch.load(session.out / "repro_a" / "best.pt", weights_only=True)["state"]
    sd_b = torch.load(session.out / "repro_b" / "best.pt", weights_only=True)["state"]
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_a_run_folder_holds_one_run(session):
    with pytest.raises(ValueError, match="already holds a run"):
        session.source_only()  # the fixture wrote baselines/source_only already


def test_domain_check_aligns_the_pipeline_and_is_recorded(session):
    pipe = session.data.pipeline
    assert pipe.grayscale  # the 'real' camera is gray, the sim shapes are colour
    out = session.out
    report = json.loads((out / "domain_check.json").read_text())
    assert any(f["key"] == "grayscale" for f in report["findings"])
    assert "grayscale" in (out / "domain_check.md").read_text()
    assert json.loads((out / "input_pipeline.json").read_text())["grayscale"] is True
    splits = json.loads((out / "splits.json").read_text())
    assert splits["counts"]["train"] == 4 and splits["counts"]["val"] == 6 and splits["counts"]["test"] == 6


def test_negative_transfer_warning_fires_when_adapted_is_worse(session):
    session.results["source_only"] = RunResult("source-only", "source_only", [], None,
                                               real_test={"ap50": 1.0, "center_err_px_median": 0.0,
                                                          "box_iou_mean": 1.0})
    try:
        with pytest.warns(NegativeTransferWarning, match="worse than source-only"):
            res = session.adapt(["finetune"], session.out / "neg")
    finally:
        session.results.pop("source_only")
    assert any("negative transfer" in w for w in res.warnings)
    assert json.loads((session.out / "neg" / "summary.json").read_text())["warnings"]


def test_real_only_baseline_trains_a_fresh_head_on_real_labels(session):
    res = session.real_only(session.out / "real_only")
    assert res.kind == "real_only" and res.selection == "real_val" and res.real_test["n"] == 6
    assert (session.out / "real_only" / "best.pt").is_file()
    records = read_jsonl(session.out / "real_only" / "metrics.jsonl")
    assert all("loss/sim" not in r for r in records)  # no sim data
    assert any("loss/real" in r for r in records)


def test_label_free_selection_when_no_real_labels_are_used(world, lite0):
    sess = AdaptSession(make_cfg(world, world["root"] / "runs" / "k0", "k=0", "epochs=2", "patience=0"),
                        backbone=lite0)
    assert sess.real_only().note.startswith("not run")
    res = sess.adapt(["mmd"])
    assert res.selection == "label_free"
    assert all("loss/real" not in r for r in read_jsonl(sess.out / "metrics.jsonl"))
    summary = json.loads((sess.out / "summary.json").read_text())
    assert summary["selection_rule"].startswith("LABEL-FREE")
    scores = [r["selection/score"] for r in read_jsonl(sess.out / "metrics.jsonl") if r.get("split") == "val"]
    mmds = [r["align/feat_mmd"] for r in read_jsonl(sess.out / "metrics.jsonl") if r.get("split") == "val"]
    assert scores == mmds and res.best_epoch == int(np.argmin(mmds))


def test_cli_adapt_end_to_end(world, tmp_path, capsys):
    yaml_path = tmp_path / "adapt.yaml"
    yaml_path.write_text("methods: [coral]\nk: 4\n")
    run_dir = tmp_path / "run"
    args = ["adapt", "--from", str(world["ckpt"]), "--config", str(yaml_path), "--run-dir", str(run_dir),
            f"sim_dataset={world['sim']}", f"real_labels={world['real'] / 'annotations.json'}",
            f"cache_dir={world['root'] / 'cache'}", *[a for a in FAST if not a.startswith("tracking.")], "epochs=1",
            "--no-wandb"]
    assert main(args) == 0
    assert not (run_dir / "wandb").exists()  # --no-wandb: tracking.mode=disabled
    for sub in ("", "baselines/source_only", "baselines/real_only"):
        _check_report(run_dir / sub)
    assert any("gap/feat_mmd" in r for r in read_jsonl(run_dir / "metrics.jsonl"))
    out = capsys.readouterr().out
    assert "source-only" in out and "real-only fine-tune" in out and "model selection:" in out
    for name in ("best.pt", "report.md", "results.csv", "report.html", "domain_check.md",
                 "baselines/source_only/result.json", "baselines/real_only/best.pt"):
        assert (run_dir / name).exists(), name
    md = (run_dir / "report.md").read_text()
    assert "| source-only |" in md and "| real-only fine-tune |" in md and "| coral |" in md


def _check_report(run_dir):
    """report.html exists; its PNGs (frames, confusion, error histograms, t-SNE) are valid images."""
    from PIL import Image

    assert (run_dir / "report.html").is_file(), run_dir
    names = {p.stem for p in (run_dir / "report").glob("*.png")}
    assert {"frames", "confusion", "localization_errors", "feature_embedding"} <= names, (run_dir, names)
    for path in (run_dir / "report").glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        with Image.open(path) as im:
            im.verify()


# --- the installed ViSP cube footage ------------------------------------------------------------


@pytest.mark.needs_data("visp_labels")
def test_visp_default_data_uses_pool_frames_for_alignment_and_never_the_eval_frames(tmp_path):
    sim = write_shapes_dataset(tmp_path / "sim", 8, (64, 48), classes=("cube",))
    cfg = load_config(AdaptConfig, None, [f"sim_dataset={sim}", "k=5", "domain_check_samples=6",
                                          "unlabelled.stride=5"])
    data = AdaptData(cfg, ["cube"], 8, (240, 320), tmp_path)
    frames = data.splits.frames
    assert sorted(frames[i] for i in data.splits["pool"]) == list(range(0, 46))
    assert [frames[i] for i in data.splits["val"]] == list(range(48, 68))
    assert [frames[i] for i in data.splits["test"]] == list(range(70, 100))
    assert all(0 <= f <= 45 for f in data.unlabelled_ids) and data.unlabelled_ids == list(range(0, 46, 5))
    assert data.k == 5 and all(frames[i] <= 45 for i in data.splits["train"])
    assert data.pipeline.grayscale and data.pipeline.input_hw == (240, 320)
    assert data.real["test"].image_hw[0].tolist() == [480, 640]


# --- bad input ------------------------------------------------------------------------------


def _data(world, tmp_path, *extra):
    cfg = load_config(AdaptConfig, None, [f"sim_dataset={world['sim']}",
                                          f"real_labels={world['real'] / 'annotations.json'}", *FAST, *extra])
    return AdaptData(cfg, list(SHAPES), 8, HW, tmp_path / "out")


def _labels(world, tmp_path, edit) -> str:
    data = json.loads((world["real"] / "annotations.json").read_text())
    edit(data)
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    return f"real_image_root={world['real']}", f"real_labels={path}"


def test_bad_real_inputs_give_clear_errors(world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FootageError, match="no image files"):
        _data(world, tmp_path, f"unlabelled.source={empty}")
    with pytest.raises(RealDataError, match="does not exist"):
        _data(world, tmp_path, f"unlabelled.source={tmp_path / 'nowhere'}")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(FootageError, match="cannot open video"):
        _data(world, tmp_path, f"unlabelled.source={broken}")

    def missing_image(d):
        d["images"][3]["file_name"] = "images/gone.png"

    with pytest.raises(RealDataError, match="not found"):
        _data(world, tmp_path, *_labels(world, tmp_path, missing_image))

    def box_outside(d):
        d["annotations"][2]["bbox"] = [50.0, 10.0, 40.0, 20.0]

    with pytest.raises(RealDataError, match="inside the image"):
        _data(world, tmp_path, *_labels(world, tmp_path, box_outside))

    def unknown_class(d):
        d["categories"][0]["name"] = "teapot"

    with pytest.raises(ClassMappingError, match="teapot"):
        _data(world, tmp_path, *_labels(world, tmp_path, unknown_class))
    _data(world, tmp_path, *_labels(world, tmp_path, unknown_class), "class_mapping={teapot: square}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _data(world, tmp_path, f"sim_dataset={tmp_path / 'no_sim'}")


def test_corrupt_footage_frames_are_skipped_and_counted(world, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(world["real"] / "images", frames)
    (frames / "000005.png").write_bytes(b"\x89PNG broken")
    data = _data(world, tmp_path, f"unlabelled.source={frames}")
    assert data.footage_report["skipped"] == 1 and data.footage_report["skipped_frames"] == [5]
    assert len(data.unlabelled) == 39
    saved = json.loads((tmp_path / "out" / "unlabelled_footage.json").read_text())
    assert saved["skipped"] == 1


def test_cli_reports_bad_input_as_a_one_line_error(world, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["adapt", "--from", str(world["ckpt"]), "--config", str(tmp_path / "none.yaml")])
    assert code == 2 and "none.yaml" in capsys.readouterr().err
    (tmp_path / "a.yaml").write_text("{}\n")
    code = main(["adapt", "--from", str(world["ckpt"]), "--config", str(tmp_path / "a.yaml"),
                 f"sim_dataset={world['sim']}", f"real_labels={world['real'] / 'annotations.json'}",
                 f"unlabelled.source={empty}", f"run_dir={tmp_path / 'r'}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "sim2real adapt: error:" in err and str(empty) in err
    code = main(["adapt", "--config", str(tmp_path / "a.yaml")])
    assert code == 2 and "checkpoint" in capsys.readouterr().err


def test_a_real_multi_object_coco_file_adapts_end_to_end(session, lite0):
    """Real labels with several objects of several classes per image: every split is exported with all of
    them, the adapted model is scored per class on all of them, and predicts instances of several classes."""
    run_dir = session.out / "multi_object"
    res = session.adapt(["coral"], run_dir)
    test = json.loads((session.out / "real" / "test" / "annotations.json").read_text())
    per_image = {}
    for a in test["annotations"]:
        per_image.setdefault(a["image_id"], set()).add(a["category_id"])
    assert len(test["images"]) == len(per_image) and min(len(v) for v in per_image.values()) >= 1
    assert sum(len(v) >= 2 for v in per_image.values()) >= 3       # images holding two classes at once
    assert sum(1 for a in test["annotations"]) > len(test["images"])  # several objects per image
    assert res.real_test["n"] == len(test["images"]) and 0.0 <= res.real_test["ap50"] <= 1.0
    summary = json.loads((run_dir / "summary.json").read_text())
    per_class = [k for k in summary if k.startswith("real/ap50/")]
    assert len(per_class) >= 2, sorted(summary)   # scored per class, on every labelled class
