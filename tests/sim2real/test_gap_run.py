"""The gap run pieces and ``sim2real gap`` / ``sim2real evaluate`` run folders (no W&B here)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sim2real.data.real_visp import visp_cube_labels_path, visp_image_root
from sim2real.cli import main
from sim2real.config import ConfigError, load_config
from sim2real.data.dataset import CocoDataset
from sim2real.eval import DomainEval, evaluate_dataset, evaluate_domain, subset_rows
from sim2real.gap import FeatureGapTracker, GapTrackingConfig
from sim2real.gap.run import (frame_items, gap_record, gap_table, image_records, match_instances, per_image_errors,
                               write_gap_report)
from sim2real.io import read_jsonl
from sim2real.models import ModelConfig, build_model, save_checkpoint
from sim2real.models.heads import HeadConfig
from sim2real.train.config import TrainConfig
from sim2real.train.toy_data import write_shapes_dataset

REAL_ROOT = visp_image_root()
CLASSES = ("square", "disc", "triangle")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("gapdata")
    # Two objects per image (a target and a distractor) of three classes.
    sim = write_shapes_dataset(root / "sim", num_images=12, size=(64, 48), seed=0)
    # "Real": other scenes, rendered gray (a camera without colour) - a genuine domain shift - whose
    # labels define only two of the three classes (as the ViSP labels name only the cube).
    real = write_shapes_dataset(root / "real", num_images=9, size=(64, 48), seed=7, gray=True,
                                classes=CLASSES[:2])
    torch.manual_seed(0)
    # score_thresh 0.05: the untrained head's scores (about 0.1) reach the report's frames and records.
    model = build_model(ModelConfig(input_hw=[48, 64], head=HeadConfig(score_thresh=0.05)), list(CLASSES))
    ckpt = save_checkpoint(root / "model" / "best.pt", model)
    return sim, real, ckpt


def _png_ok(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100, path


def test_subset_rows_evenly_spaced_and_stable():
    assert subset_rows(5, None).tolist() == [0, 1, 2, 3, 4]
    assert subset_rows(5, 0).tolist() == [0, 1, 2, 3, 4]
    assert subset_rows(100, 4).tolist() == [0, 33, 66, 99]
    assert subset_rows(100, 4).tolist() == subset_rows(100, 4).tolist()


def test_evaluate_domain_matches_evaluator_and_keeps_embed_features(sets):
    sim, _, ckpt = sets
    from sim2real.models import load_checkpoint

    model = load_checkpoint(ckpt).eval()
    ds = CocoDataset(sim, classes=model.classes, num_keypoints=model.num_keypoints)
    dom = evaluate_domain(model, ds, "sim")
    ref = evaluate_dataset(model, CocoDataset(sim, classes=model.classes, num_keypoints=model.num_keypoints))
    for k, v in ref.items():
        assert dom.metrics[k] == (pytest.approx(v, nan_ok=True) if isinstance(v, float) else v), k
    assert dom.features.shape == (12, 1280) and dom.features.dtype == np.float32
    x = torch.stack([ds[i]["image"] for i in range(3)])
    with torch.no_grad():
        np.testing.assert_allclose(dom.features[:3], model.embed(x).numpy(), rtol=1e-5, atol=1e-5)
    sub = evaluate_domain(model, ds, "sim", max_images=4)
    assert sub.metrics["n"] == 4 and np.array_equal(sub.features, dom.features[subset_rows(12, 4)])


def _noisy_oracle(ds: CocoDataset, name: str, seed: int, score_thresh: float = 0.3) -> DomainEval:
    """A DomainEval whose predictions are the labels jittered by a few pixels, one in four with the
    wrong class, scores in [0.2, 1) (some below the threshold), plus one false detection per image."""
    from sim2real.eval.metrics import perception_metrics

    rng = np.random.default_rng(seed)
    true = ds.original_targets()
    n, m = true["label"].shape
    p = 20
    pred = {"label": np.full((n, p), -1, np.int64), "score": np.zeros((n, p), np.float32),
            "box": np.zeros((n, p, 4)), "center": np.zeros((n, p, 2)),
            "keypoints": np.zeros((n, p) + true["keypoints"].shape[2:]),
            "kp_score": np.zeros((n, p, true["keypoints"].shape[2]), np.float32)}
    for i in range(n):
        k = int((true["label"][i] >= 0).sum())
        lab = true["label"][i, :k].copy()
        wrong = rng.random(k) < 0.25
        lab[wrong] = (lab[wrong] + 1) % len(CLASSES)
        pred["label"][i, :k + 1] = np.append(lab, rng.integers(len(CLASSES)))
        pred["score"][i, :k + 1] = np.append(rng.uniform(0.2, 1.0, k), 0.5)
        pred["box"][i, :k] = true["box"][i, :k] + rng.normal(0, 1.0, (k, 4))
        pred["box"][i, k] = [1, 1, 9, 9]  # nothing is labelled there in a 64x48 image? (a false positive)
        pred["center"][i, :k] = true["center"][i, :k] + rng.normal(0, 1.5, (k, 2))
        pred["keypoints"][i, :k] = true["keypoints"][i, :k] + rng.normal(0, 1.0, (k,) + true["keypoints"].shape[2:])
        pred["kp_score"][i, :k + 1] = 0.9
        order = np.argsort(-pred["score"][i], kind="stable")
        for key in pred:
            pred[key][i] = pred[key][i][order]
    metrics = perception_metrics(pred, true, CLASSES, scored=ds.scored_classes, score_thresh=score_thresh)
    return DomainEval(name, metrics, rng.standard_normal((n, 8)).astype(np.float32), pred, true, ds.load,
                      score_thresh=score_thresh, scored=ds.scored_classes, names=ds.file_names)


def test_matched_instance_errors_frames_and_records_hold_every_instance(sets):
    sim, _, _ = sets
    ds = CocoDataset(sim, classes=list(CLASSES), num_keypoints=8)
    dom = _noisy_oracle(ds, "sim", 0)
    assert (ds.original_targets()["label"] >= 0).sum(1).min() == 2  # two objects per image
    # The report's histograms are over the same matched pairs as the metrics.
    match = match_instances(dom, CLASSES)
    errs = per_image_errors(dom, CLASSES)
    assert set(errs) == {"center_err_px", "keypoint_err_px", "box_iou"}
    assert len(errs["center_err_px"]) == (match >= 0).sum() > 12
    assert np.median(errs["center_err_px"]) == pytest.approx(dom.metrics["center_err_px_median"])
    assert np.mean(errs["box_iou"]) == pytest.approx(dom.metrics["box_iou_mean"])
    assert dom.metrics["acc"] < 1.0 and dom.metrics["fp_per_image"] > 0
    # Frames: every detection from the threshold and every labelled object, in the image's pixels.
    frames = frame_items(dom, CLASSES, n=3)
    assert len(frames) == 3
    img, pred, label = frames[0]
    row = 0
    above = int((dom.pred["score"][row] >= 0.3).sum())
    assert img.shape == (48, 64, 3) and len(pred["instances"]) == above >= 1
    assert len(label["instances"]) == 2 and all(len(t["keypoints"]) == 8 for t in label["instances"])
    assert {"class", "score", "box", "center", "keypoints"} <= set(pred["instances"][0])
    assert [t["class"] for t in label["instances"]] == [CLASSES[c] for c in dom.true["label"][row, :2]]
    # One record per image: every instance from the threshold, best first, and the ground truth.
    recs = image_records(dom, CLASSES)
    assert len(recs) == 12 and recs[0]["image"] == "images/000000.png"
    for i, rec in enumerate(recs):
        scores = [inst["score"] for inst in rec["instances"]]
        assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3
        assert len(rec["instances"]) == int((dom.pred["score"][i] >= 0.3).sum())
        assert len(rec["ground_truth"]) == 2
    json.dumps(recs)  # plain JSON


def test_report_has_per_class_table_pr_curves_and_reliability(tmp_path, sets):
    """A multi-class run: the per-class table (sim and real columns, "not labelled" for a class the
    real labels do not define), the precision-recall plot and the reliability plot."""
    sim, real, _ = sets
    sim_dom = _noisy_oracle(CocoDataset(sim, classes=list(CLASSES), num_keypoints=8), "sim", 1)
    real_dom = _noisy_oracle(CocoDataset(real, classes=list(CLASSES), num_keypoints=8), "real", 2)
    assert real_dom.scored == [0, 1]
    report = write_gap_report(tmp_path, [sim_dom, real_dom], classes=CLASSES, num_frames=2)
    for name in ("precision_recall", "reliability", "frames", "localization_errors", "confusion"):
        _png_ok(tmp_path / "report" / f"{name}.png")
    html = report.html_path.read_text()
    assert "<h2>precision recall</h2>" in html and "<h2>reliability</h2>" in html
    assert "<h2>Per class</h2>" in html and "<th>sim AP50</th><th>sim AP</th><th>real AP50</th>" in html
    table = html[html.index("<h2>Per class</h2>"):]
    table = table[:table.index("</table>")]
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    for c in CLASSES[:2]:
        cells = (f"<tr><td>{c}</td><td>{fmt(sim_dom.metrics[f'ap50/{c}'])}</td><td>{fmt(sim_dom.metrics[f'ap/{c}'])}"
                 f"</td><td>{fmt(real_dom.metrics[f'ap50/{c}'])}</td><td>{fmt(real_dom.metrics[f'ap/{c}'])}</td></tr>")
        assert cells in table, c
    assert (f"<tr><td>triangle</td><td>{fmt(sim_dom.metrics['ap50/triangle'])}</td>"
            f"<td>{fmt(sim_dom.metrics['ap/triangle'])}</td><td colspan='2' class='nl'>not labelled</td></tr>") in table
    assert sim_dom.metrics["ap50/square"] > 0.3  # the jittered labels are found
    # The reliability plot is titled with the sim validation's ECE.
    assert np.isfinite(sim_dom.metrics["ece"])


def _dom(name, metrics, shift, seed):
    feats = np.random.default_rng(seed).standard_normal((40, 16)).astype(np.float32) + shift
    return DomainEval(name, metrics, feats, {}, {}, lambda r: None)


def test_gap_record_signs_and_feature_distances():
    sim = _dom("sim", {"acc": 0.9, "center_err_px_median": 2.0, "loss": 0.5, "loss/cls": 0.2, "n": 40,
                       "confusion": [[1]], "num_corrupt": 0}, 0.0, 1)
    real = _dom("real", {"acc": 0.6, "center_err_px_median": 7.0, "loss": 0.9, "loss/cls": 0.4, "n": 40,
                         "confusion": [[1]], "num_corrupt": 2}, 1.0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bookkeeping keys must not trigger "unknown direction"
        rec = gap_record(sim, real, FeatureGapTracker(GapTrackingConfig()), final=True)
    assert rec["gap/acc"] == pytest.approx(0.3) and rec["gap/center_err_px_median"] == pytest.approx(5.0)
    assert rec["gap/loss"] == pytest.approx(0.4)
    assert not any(k.endswith(("/n", "confusion", "num_corrupt")) or "loss/" in k for k in rec)
    assert {"gap/feat_mmd", "gap/feat_coral", "gap/feat_frechet", "gap/feat_pad"} <= set(rec)
    same = gap_record(sim, _dom("real", real.metrics, 0.0, 3), FeatureGapTracker(), final=True)
    assert rec["gap/feat_mmd"] > 3 * same["gap/feat_mmd"] and rec["gap/feat_frechet"] > 3 * same["gap/feat_frechet"]
    table = gap_table(rec)
    assert table.splitlines()[1].split() == ["acc", "0.9", "0.6", "0.3"]
    assert "feature mmd" in table and "sigma" not in table


def test_gap_command_writes_run_folder_report_and_table(tmp_path, sets, capsys):
    sim, real, ckpt = sets
    out = tmp_path / "gap"
    args = ["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(real), "--out", str(out),
            "--max-images", "8", "--no-wandb"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "(8 sim / 8 real images)" in printed and f"report: {out / 'report.html'}" in printed
    assert "gap (+ = real worse)" in printed and "feature frechet" in printed
    assert not (out / "wandb").exists()
    recs = read_jsonl(out / "metrics.jsonl")
    assert len(recs) == 1
    rec = recs[0]
    # Detection metrics flow into the record: gap = sim - real for AP (higher is better), real - sim for ECE.
    for m in ("ap", "ap50", "ap75", "ar"):
        assert rec[f"gap/{m}"] == pytest.approx(rec[f"sim/{m}"] - rec[f"real/{m}"]), m
    assert rec["gap/ece"] == pytest.approx(rec["real/ece"] - rec["sim/ece"])
    assert rec["gap/fp_per_image"] == pytest.approx(rec["real/fp_per_image"] - rec["sim/fp_per_image"])
    # Per class: every class on sim; on real only the two its labels define.
    for c in CLASSES:
        assert f"sim/ap50/{c}" in rec and f"sim/ap/{c}" in rec
    assert "real/ap50/square" in rec and "gap/ap50/square" in rec
    assert not any("triangle" in k for k in rec if not k.startswith("sim/"))
    assert "ap50/triangle" in printed and "not labelled" in printed
    assert rec["gap/feat_pad"] >= 0 and rec["gap/feat_mmd"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gap/ap50"] == rec["gap/ap50"] and summary["method"] == "unknown"
    assert summary["data/sim_n"] == 8 and summary["data/real_n"] == 8
    assert (out / "config.yaml").is_file() and (out / "run_info.json").is_file()
    for name in ("metric_curves", "feature_embedding", "confusion", "localization_errors", "precision_recall",
                 "reliability", "frames"):
        _png_ok(out / "report" / f"{name}.png")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 7 and "<td>ap50</td>" in html
    assert "<td>triangle</td>" in html and "not labelled" in html and "<td>ap50/square</td>" not in html
    # Per-image records: every detection from the model's threshold (0.05 here) and every labelled object.
    for d, n_gt in (("sim", 2), ("real", 2)):
        recs_d = read_jsonl(out / f"predictions_{d}.jsonl")
        assert len(recs_d) == 8 and all(len(r["ground_truth"]) == n_gt for r in recs_d)
        assert recs_d[0]["image"].startswith("images/") and sum(len(r["instances"]) for r in recs_d) > 8
        assert all(i["score"] >= 0.05 for r in recs_d for i in r["instances"])
    # A second run into the same folder must be asked for.
    assert main(args) == 2
    assert "already holds a gap run" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--max-images", "4", "num_frames=0"]) == 0
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


@pytest.mark.needs_data("visp_labels")
def test_gap_on_real_visp_frames(tmp_path):
    data = json.loads(visp_cube_labels_path().read_text())
    keep = {im["id"] for im in data["images"][:40:10]}  # 4 labelled dev frames (0-99 only)
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    real = tmp_path / "visp4.coco.json"
    real.write_text(json.dumps(data))
    sim = write_shapes_dataset(tmp_path / "sim", num_images=6, size=(64, 48), seed=1, classes=("cube", "disc"))
    model = build_model(ModelConfig(input_hw=[48, 64], head=HeadConfig(score_thresh=0.05)), ["cube", "disc"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    out = tmp_path / "out"
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(real), "--real-image-root",
                 str(REAL_ROOT), "--out", str(out), "--no-wandb", "num_frames=2", "gap.metrics=[mmd,coral]"]) == 0
    rec = read_jsonl(out / "metrics.jsonl")[0]
    assert {"gap/feat_mmd", "gap/feat_coral"} <= set(rec) and "gap/feat_pad" not in rec
    assert json.loads((out / "summary.json").read_text())["data/real_n"] == 4
    _png_ok(out / "report" / "frames.png")  # 640x480 gray frames with the predictions drawn
    # The ViSP labels name only the cube: the model's other class is not scored on real.
    assert "real/ap50/cube" in rec and "real/ap50/disc" not in rec and "sim/ap50/disc" in rec
    assert "not labelled" in (out / "report.html").read_text()
    recs = read_jsonl(out / "predictions_real.jsonl")
    assert len(recs) == 4 and all(g["class"] == "cube" for r in recs for g in r["ground_truth"])


def test_gap_bad_inputs_are_one_line_errors(tmp_path, sets, capsys):
    sim, real, ckpt = sets
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--no-wandb"]) == 2
    assert "real" in capsys.readouterr().err
    other = write_shapes_dataset(tmp_path / "other", num_images=2, classes=("cube",))
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(other), "--no-wandb",
                 "--out", str(tmp_path / "o")]) == 2
    assert "none of its classes" in capsys.readouterr().err
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(real), "--no-wandb",
                 "gap.metrics=[mmd,psnr]"]) == 2
    assert "gap.metrics" in capsys.readouterr().err


def test_evaluate_writes_a_tracked_run_folder(tmp_path, sets, capsys):
    from sim2real.commands.evaluate import pose_line

    _, real, ckpt = sets
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real), "--out", str(out), "--no-wandb",
                 "--domain", "real"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'eval_real' / 'report.html'}" in printed
    run = out / "eval_real"
    rec = read_jsonl(run / "metrics.jsonl")
    assert len(rec) == 1 and "real/ap50" in rec[0] and "real/acc" in rec[0] and "real/n" not in rec[0]
    res = json.loads((out / "eval_real.json").read_text())
    m = res["metrics"]
    assert rec[0]["real/ap50"] == m["ap50"] and rec[0]["real/ap"] == m["ap"] and res["domain"] == "real"
    # Per class: the real labels define square and disc only; the files and the output end with them.
    assert rec[0]["real/ap50/square"] == m["ap50/square"] and "ap50/triangle" not in m
    md = (out / "eval_real.md").read_text()
    for k in ("ap", "ap50", "ap75", "ar", "acc", "center_err_px_median", "box_iou_mean", "fp_per_image"):
        assert f"| {k} |" in md, k
    md_lines = md.strip().splitlines()
    start = md_lines.index("| class | AP50 | AP |")
    tail = md_lines[start + 1:start + 5]
    assert tail[0] == "|---|---|---|" and tail[-1] == "| triangle | not labelled | not labelled |"
    assert tail[1] == f"| square | {m['ap50/square']:.4g} | {m['ap/square']:.4g} |"
    # The keypoints are trained: the pose metrics follow the per-class table (none here: no pose labels).
    assert md_lines[start + 6].startswith("pose") and "pose_ok_fraction" in m and m["pose_ok_fraction"] is None
    lines = printed.strip().splitlines()
    assert lines[-1].startswith("pose") and lines[-1] == pose_line(m)
    assert lines[-5].startswith("  class") and lines[-2].split() == ["triangle", "not", "labelled", "not", "labelled"]
    assert lines[-4].split() == ["square", f"{m['ap50/square']:.4g}", f"{m['ap/square']:.4g}"]
    preds = read_jsonl(run / "predictions.jsonl")
    assert len(preds) == 9 and all(len(r["ground_truth"]) == 2 for r in preds)
    assert not (run / "wandb").exists()
    for name in ("confusion", "localization_errors", "precision_recall", "reliability", "frames"):
        _png_ok(run / "report" / f"{name}.png")
    # A generator-style folder (manifest.json) counts as sim; re-evaluating replaces the record.
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real), "--out", str(out), "--no-report",
                 "tracking.mode=disabled"]) == 0
    assert list(read_jsonl(run / "metrics.jsonl")[0])[0] == "sim/ap"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real), "tracking.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real), "project=x"]) == 2
    assert "tracking.<key>=<value>" in capsys.readouterr().err


def test_real_val_config_checks():
    cfg = load_config(TrainConfig, None, ["real_val.data=x.json", "real_val.max_images=8"])
    assert cfg.real_val.enabled and cfg.gap.max_samples == 128
    assert not load_config(TrainConfig, None, []).real_val.enabled
    with pytest.raises(ConfigError, match="real_val.footage_frames"):
        load_config(TrainConfig, None, ["real_val.footage_frames=[100,0]"])
    with pytest.raises(ConfigError, match="gap.metrics"):
        load_config(TrainConfig, None, ["gap.metrics=[fid]"])
