"""Your own footage: no silent built-in labels, labels must match the footage's camera, the report
says which real frames served what, --no-progress, one-line warnings, the opt-in brightness fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sim2real.adapt.config import AdaptConfig
from sim2real.adapt.data import NO_REAL_METRICS, AdaptData, shift_brightness
from sim2real.adapt.trainer import AdaptSession
from sim2real.cli import main
from sim2real.config import ConfigError, load_config
from sim2real.data.real import RealDataError
from sim2real.train.toy_data import SHAPES

from test_adapt_runs import FAST, HW, lite0, world  # noqa: F401  (module fixtures reused)

REPO = Path(__file__).resolve().parents[2]
FAST_NO_K = [a for a in FAST if not a.startswith(("k=", "tracking.", "progress="))]


def _frames(world, tmp_path, name="frames", scale=1.0, size=None) -> Path:
    """The world's 'real' images as a plain frame folder (own footage without labels)."""
    out = tmp_path / name
    out.mkdir()
    for p in sorted((world["real"] / "images").glob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if size is not None:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        if scale != 1.0:
            img = np.clip(img.astype(np.float32) * scale, 0, 255).astype(np.uint8)
        cv2.imwrite(str(out / p.name), img)
    return out


def _broken_visp(tmp_path, monkeypatch) -> None:
    """Point the built-in ViSP labels and images somewhere that fails if anything reads them."""
    bad = tmp_path / "visp_labels_must_not_be_read.json"
    bad.write_text("{ this is not JSON")
    monkeypatch.setenv("SIM2REAL_VISP_LABELS", str(bad))
    monkeypatch.setenv("SIM2REAL_VISP_ROOT", str(tmp_path / "no_visp_here"))


def test_own_footage_without_labels_refuses_k_or_real_val_with_a_hint(tmp_path):
    for extra, key in ((["k=5"], "'k'"), (["k=0", "selection=real_val"], "'selection'")):
        with pytest.raises(ConfigError, match=key) as e:
            load_config(AdaptConfig, str(REPO / "configs/adapt.yaml"), [f"unlabelled.source={tmp_path}", *extra])
        assert "real_labels=<your COCO file>" in str(e.value) and "\n" not in str(e.value)
    cfg = load_config(AdaptConfig, str(REPO / "configs/adapt.yaml"), [f"unlabelled.source={tmp_path}", "k=0"])
    assert cfg.real_labels == "auto" and cfg.labels_choice() is None
    # the demo (no footage named) keeps the ViSP labels; asking for them by name always works
    assert load_config(AdaptConfig, str(REPO / "configs/adapt.yaml")).labels_choice() == "visp"
    named = load_config(AdaptConfig, None, [f"unlabelled.source={tmp_path}", "real_labels=visp"])
    assert named.labels_choice() == "visp" and named.k == 10


def test_cli_own_footage_k_without_labels_is_a_one_line_error(world, tmp_path, capsys, monkeypatch):
    _broken_visp(tmp_path, monkeypatch)
    frames = _frames(world, tmp_path)
    code = main(["adapt", "--from", str(world["ckpt"]), "--config", str(REPO / "configs/adapt.yaml"),
                 f"sim_dataset={world['sim']}", f"unlabelled.source={frames}", f"run_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("sim2real adapt: error:") and err.count("\n") == 1, err
    assert "real_labels=<your COCO file>" in err and "k=0" in err
    assert not (tmp_path / "r" / "splits.json").exists()


def test_labels_of_a_different_image_size_than_the_footage_are_refused(world, tmp_path):
    frames = _frames(world, tmp_path, size=(80, 60))
    labels = world["real"] / "annotations.json"
    cfg = load_config(AdaptConfig, None, [f"sim_dataset={world['sim']}", f"real_labels={labels}",
                                          f"unlabelled.source={frames}", *FAST])
    with pytest.raises(RealDataError) as e:
        AdaptData(cfg, list(SHAPES), 8, HW, tmp_path / "out")
    msg = str(e.value)
    assert str(labels) in msg and str(frames) in msg and "64x48" in msg and "80x60" in msg
    assert "different camera" in msg and "\n" not in msg
    # same size but other intrinsics (when the footage's K is given) is refused too
    same = _frames(world, tmp_path, name="same_size")
    cfg = load_config(AdaptConfig, None, [f"sim_dataset={world['sim']}", f"real_labels={labels}",
                                          f"unlabelled.source={same}", *FAST,
                                          "unlabelled.camera_K=[[500,0,32],[0,500,24],[0,0,1]]"])
    with pytest.raises(RealDataError, match="camera_K"):
        AdaptData(cfg, list(SHAPES), 8, HW, tmp_path / "out2")


def test_labels_with_own_footage_record_what_was_read(world, tmp_path):
    frames = _frames(world, tmp_path)
    cfg = load_config(AdaptConfig, None, [f"sim_dataset={world['sim']}",
                                          f"real_labels={world['real'] / 'annotations.json'}",
                                          f"unlabelled.source={frames}", *FAST, "unlabelled.stride=2"])
    out = tmp_path / "out"
    data = AdaptData(cfg, list(SHAPES), 8, HW, out)
    splits = json.loads((out / "splits.json").read_text())
    footage = json.loads((out / "unlabelled_footage.json").read_text())
    assert splits["splits"]["unlabelled"] == [] and splits["counts"]["unlabelled"] == 0
    assert splits["unlabelled_from"]["source"] == str(frames)
    assert splits["unlabelled_from"]["read"] == footage["read"] == len(footage["frames"]) == 20
    rf = json.loads((out / "real_frames.json").read_text())
    assert rf["unlabelled"] == {"source": str(frames), "from": "footage", "count": 20, "skipped": 0,
                                "frames": footage["frames"], "also_labelled": {}}
    assert rf["labelled"]["train"]["count"] == 4 and rf["labelled"]["test"]["count"] == 6
    assert rf["real_metrics"] == f"real metrics on the labelled real TEST split ({rf['labelled']['test']['frames']})"
    assert rf["labelled"]["test"]["frames"] == "frames 34–39"
    assert data.real_frames == rf
    # footage that IS the labelled images (same files): val/test frames in the unlabelled set are named
    same = load_config(AdaptConfig, None, [f"sim_dataset={world['sim']}",
                                           f"real_labels={world['real'] / 'annotations.json'}",
                                           f"unlabelled.source={world['real'] / 'images'}", *FAST])
    with pytest.warns(RuntimeWarning, match="contains labelled 6 val frame"):
        data = AdaptData(same, list(SHAPES), 8, HW, tmp_path / "out_same")
    assert data.real_frames["unlabelled"]["also_labelled"]["test"] == list(range(34, 40))


def test_cli_own_footage_k0_uses_no_label_it_was_not_given(world, tmp_path):
    """The whole CLI in a subprocess, as a user runs it: own footage, k=0, the default real_labels;
    the built-in ViSP labels point at a broken file. Also --no-progress and one-line warnings."""
    frames = _frames(world, tmp_path)
    bad = tmp_path / "visp_labels_must_not_be_read.json"
    bad.write_text("{ this is not JSON")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SIM2REAL_VISP_LABELS": str(bad),
           "SIM2REAL_VISP_ROOT": str(tmp_path / "no_visp_here"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("PYTHONWARNINGS", None)
    args = [sys.executable, "-m", "sim2real", "adapt", "--from", str(world["ckpt"]), "--config",
            str(REPO / "configs/adapt.yaml"), "--run-dir", str(run_dir), "--no-progress", "--no-wandb", "--no-baselines",
            f"sim_dataset={world['sim']}", f"unlabelled.source={frames}", "k=0", "methods=[adabn]",
            f"cache_dir={world['root'] / 'cache'}", *FAST_NO_K, "epochs=1", "steps_per_epoch=1"]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, err = proc.stdout, proc.stderr
    # no labels -> no real metrics, said plainly; nothing claims a real TEST split
    assert NO_REAL_METRICS in out and "TEST split" not in out and "70-99" not in out and "70–99" not in out
    md = (run_dir / "report.md").read_text()
    assert "no labelled real frames: real metrics not computed" in md and "TEST split" not in md
    assert "real centre err" not in md
    html = (run_dir / "report.html").read_text()
    assert "Real frames used" in html and "real metrics not computed" in html
    result = json.loads((run_dir / "result.json").read_text())
    assert result["real_test"] is None and result["real_val"] is None
    assert result["real_metrics"] == NO_REAL_METRICS and result["real_frames"]["labels"] is None
    assert not (run_dir / "splits.json").exists() and not (run_dir / "real").exists()
    rf = json.loads((run_dir / "real_frames.json").read_text())
    assert rf["labels"] is None and rf["labelled"] == {} and rf["real_labels"] == "auto"
    assert rf["unlabelled"]["from"] == "footage" and rf["unlabelled"]["count"] == 40
    # --no-progress -> progress=false in the run's resolved config
    assert "progress: false" in (run_dir / "config.yaml").read_text()
    # sim2real's warnings: one clean line each, no internal source line
    assert "sim2real adapt: warning: domain check [grayscale]" in err, err[-3000:]
    assert "DomainMismatchWarning" not in err and "warnings.warn(" not in err
    for line in err.splitlines():
        if "domain check [" in line and "INFO" not in line:
            assert line.startswith("sim2real adapt: warning: "), line


def test_opt_in_brightness_fix_shifts_sim_inputs_and_is_recorded(world, lite0, tmp_path):  # noqa: F811
    dark = _frames(world, tmp_path, name="dark", scale=0.35)
    common = [f"checkpoint={world['ckpt']}", f"sim_dataset={world['sim']}", f"unlabelled.source={dark}",
              "real_labels=null", *FAST, "k=0", f"cache_dir={world['root'] / 'cache'}"]
    # default: off -> advice only (a warning), sim inputs untouched
    with pytest.warns(UserWarning, match=r"domain check \[brightness\]"):
        plain = AdaptData(load_config(AdaptConfig, None, common), list(SHAPES), 8, HW, tmp_path / "plain")
    assert plain.pipeline.sim_brightness_shift == 0.0 and plain.pipeline.applied_fixes == []
    finding = next(f for f in plain.domain_report.findings if f.key == "brightness")
    want = finding.real - finding.sim
    assert want < -20

    cfg = load_config(AdaptConfig, None, [*common, "apply_domain_fixes=[brightness]",
                                          f"run_dir={tmp_path / 'fixed'}"])
    sess = AdaptSession(cfg, backbone=lite0)
    pipe = sess.data.pipeline
    assert pipe.sim_brightness_shift == pytest.approx(want, abs=1e-6)
    img = sess.data.sim_train.load(0)
    shifted = pipe.sim_transform()(img, 0)
    assert np.array_equal(shifted, pipe.real_transform()(shift_brightness(img, want), 0))
    assert float(pipe.real_transform()(img, 0).mean()) - float(shifted.mean()) > 10  # darker, like the camera
    assert pipe.real_transform()(img, 0) is not None and pipe.real_transform().describe().get("brightness_shift") is None
    # the sessions' sim feature stores use the shifted transform, the real ones do not
    seen = {}

    class Bank:
        def coco(self, ds, model, cut, transform, name):
            seen[name] = transform.describe()

        def frames(self, frames, model, cut, transform, name):
            seen["unlabelled"] = transform.describe()

    sess.bank = Bank()
    sess._stores(sess.source, 0, sim_train=True, real_train=False, unlabelled=True)
    assert seen["sim val features"]["brightness_shift"] == pytest.approx(want, abs=1e-3)
    assert seen["sim features (view 0)"]["brightness_shift"] == pytest.approx(want, abs=1e-3)
    assert "brightness_shift" not in seen["unlabelled"]
    # recorded where a user looks
    dc = json.loads((sess.out / "domain_check.json").read_text())
    ip = json.loads((sess.out / "input_pipeline.json").read_text())
    assert dc["applied"][0]["key"] == "brightness" and dc["applied"][0]["sim_brightness_shift"] == round(want, 3)
    assert ip["sim_brightness_shift"] == pytest.approx(want) and ip["applied_fixes"] == dc["applied"]
    assert not any("[brightness]" in w for w in ip["domain_warnings"])
    assert "Applied automatically" in (sess.out / "domain_check.md").read_text()
    assert any("brightness" in line for line in sess._report_notes()["Input pipeline: domain-check fixes applied"])
    with pytest.raises(ConfigError, match="apply_domain_fixes"):
        load_config(AdaptConfig, None, ["apply_domain_fixes=[contrast]"])


def test_compare_accepts_no_progress(tmp_path, monkeypatch, capsys):
    import sim2real.adapt.compare as compare_mod

    seen = {}

    def fake_run_compare(cfg):
        seen["cfg"] = cfg
        md = tmp_path / "compare.md"
        md.write_text("table\n")
        return compare_mod.CompareResult(tmp_path, [], md, md, {})

    monkeypatch.setattr(compare_mod, "run_compare", fake_run_compare)
    # compare.yaml already says progress: false; the flag must win over an explicit override
    assert main(["compare", "--from", "x.pt", "--no-progress", f"run_dir={tmp_path}", "adapt.progress=true"]) == 0
    cfg = seen["cfg"]
    assert cfg.adapt.progress is False and cfg.adapt.labels_choice() == "visp"  # compare.yaml names visp
    seen.clear()
    assert main(["compare", "--from", "x.pt", f"run_dir={tmp_path}", "adapt.progress=true"]) == 0
    assert seen["cfg"].adapt.progress is True
