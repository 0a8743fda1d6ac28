"""``sim2real tune`` on a tiny scene (64x48 PyBullet renders, the real ImageNet backbone at 64x96):
attribution finds a planted cause, the search is deterministic and resumes after a kill, the tuned
YAML validates as any scene, bad input is one line."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim2real.tune import knobs
from sim2real.tune.attribution import run_attribution
from sim2real.tune.probe import Embedder, FeatureCache, Prober, render_images
from sim2real.tune.search import open_study, run_search

REPO = Path(__file__).resolve().parents[2]
HW = [64, 96]
FRAMES = 16

# Sim: heavy sensor noise on every frame. The toy "real" camera: the same scene without noise,
# other seeds. The known cause of the gap is therefore the noise group.
TOY = {
    "objects": [{"class": "cube", "shape": "box", "size": [0.05, 0.05, 0.05]},
                {"class": "can", "role": "distractor", "shape": "cylinder", "radius": 0.025, "height": 0.08}],
    "num_targets": [1, 1],
    "num_distractors": [0, 1],
    "camera": {"width": 64, "height": 48, "fov_deg": 50.0, "distance_m": [0.45, 0.6]},
    "background": {"enabled": False},
    "texture_pool_size": 2,
    "texture_size_px": 16,
    "table": {"appearance": {"texture_prob": 0.5, "patterns": ["checker"]}},
    "object_appearance": {"texture_prob": 0.0},
    "postprocess": {"enabled": True, "noise_prob": 1.0, "noise_std": [0.25, 0.3], "blur_prob": 0.0,
                    "jpeg_prob": 0.0, "color_jitter_prob": 0.3},
    "physics": {"settle_steps": 5},
    "labels": {"visibility": False},
}
GROUPS = ["table_texture", "lighting", "distractors", "noise", "colour_jitter"]


def real_scene() -> dict:
    s = copy.deepcopy(TOY)
    s["postprocess"]["noise_prob"] = 0.0
    return s


@pytest.fixture(scope="module")
def prober(tmp_path_factory) -> Prober:
    return Prober(Embedder("efficientnet_lite0", HW), FeatureCache(tmp_path_factory.mktemp("cache")),
                  views_per_scene=4)


@pytest.fixture(scope="module")
def real(prober) -> np.ndarray:
    return prober.embedder(render_images(real_scene(), 24, seed=77, views_per_scene=4))


def test_attribution_ranks_the_planted_cause_first(prober, real):
    a = run_attribution(TOY, real, prober, groups=GROUPS, frames=FRAMES, seed=0)
    ranked = [r for r in a["rows"] if r["change"] is not None]
    assert ranked[0]["group"] == "noise", [(r["group"], r["delta_frechet"]) for r in ranked]
    assert ranked[0]["verdict"] == "closes"
    assert ranked[0]["delta_mmd"] < 0   # both distances agree on the planted cause
    # the table is ranked by the metric's delta
    deltas = [r["delta_frechet"] for r in ranked]
    assert deltas == sorted(deltas)


def test_groups_change_the_visp_twin_and_stay_valid():
    from sim2real_envs.config import load_scene, read_scene_file

    scene = read_scene_file(REPO / "configs/scenes/visp_cube.yaml")
    assert len(knobs.GROUPS) >= 6
    for name in knobs.GROUPS:
        probed, change = knobs.probe_scene(scene, name)
        assert change is not None, name            # every group is on in the twin
        assert probed != scene, name
        load_scene(probed)                         # still a valid scene
    for bound in ("low", "high"):
        values = {n: getattr(p, bound) for n, p in knobs.SEARCH_SPACE.items()}
        load_scene(knobs.apply_params(scene, values))
    # the hand-written values round-trip: the search's first trial IS the original scene
    own = knobs.current_values(scene, list(knobs.SEARCH_SPACE))
    assert knobs.apply_params(scene, own) == knobs.apply_params(knobs.apply_params(scene, own), own)
    assert knobs.apply_params(scene, own)["lighting"]["ambient"] == scene["lighting"]["ambient"]


def _search(out: Path, prober, real, trials: int) -> dict:
    return run_search(TOY, real, prober, out, params=["postprocess.noise_prob", "lighting.ambient.center"],
                      trials=trials, frames=8, seed=3, startup_trials=2)


def test_search_is_deterministic_and_resumes_after_a_kill(tmp_path, prober, real):
    whole = _search(tmp_path / "whole", prober, real, trials=5)
    part = tmp_path / "part"
    _search(part, prober, real, trials=2)
    study, _ = open_study(part)
    study.ask()   # a trial started and never finished: what a kill mid-trial leaves in search.db
    resumed = _search(part, prober, real, trials=5)
    assert resumed["interrupted_trials"] == 1
    assert len(resumed["trials"]) == 5
    key = [(t["params"], t["value"]) for t in whole["trials"]]
    assert [(t["params"], t["value"]) for t in resumed["trials"]] == key
    assert whole["trials"][0]["params"]["postprocess.noise_prob"] == 1.0   # trial 0: the scene as written
    assert whole["best"]["value"] <= whole["trials"][0]["value"]
    assert len({json.dumps(p) for p, _ in key}) == 5                       # it explored


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "sim2real", "tune", *args], check=False, cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)


def test_cli_writes_a_valid_tuned_scene_and_report(tmp_path):
    import cv2

    from sim2real_envs.config import load_scene

    scene_file = tmp_path / "toy.yaml"
    scene_file.write_text(yaml.safe_dump(TOY))
    footage = tmp_path / "footage"
    footage.mkdir()
    for i, img in enumerate(render_images(real_scene(), 16, seed=77, views_per_scene=4)):
        cv2.imwrite(str(footage / f"frame{i:04d}.png"), img[:, :, ::-1])
    out = tmp_path / "run"
    r = _cli("--scene", str(scene_file), "--footage", str(footage), "--out", str(out), "--trials", "2",
             f"cache_dir={tmp_path / 'cache'}", f"input_hw={HW}", "views_per_scene=4", "attribution.frames=16",
             "attribution.groups=[noise,distractors]", "search.frames=8", "search.holdout_frames=8",
             "search.startup_trials=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    tuned = out / "toy.tuned.yaml"
    load_scene(tuned)                                    # the scene validation every scene goes through
    assert "+++" in (out / "toy.tuned.diff").read_text() or (out / "toy.tuned.diff").read_text() == ""
    rec = json.loads((out / "tune.json").read_text())
    assert rec["attribution"]["rows"][0]["group"] == "noise"
    assert len(rec["search"]["trials"]) == 2 and set(rec["holdout"]["reduction"]) == {"frechet", "mmd"}
    h = rec["holdout"]   # the Fréchet split into content and narrowing adds up to the Fréchet change
    assert h["frechet_change"]["content"] + h["frechet_change"]["narrowing"] == pytest.approx(
        h["original"]["frechet"] - h["tuned"]["frechet"], rel=1e-6, abs=1e-6)
    html = (out / "report.html").read_text()
    assert "Attribution" in html and "Search" in html and "data:image/png;base64" in html
    assert str(tuned) in r.stdout or str(tuned) in r.stdout.replace("//", "/")


def test_frechet_change_says_when_the_gap_closed_by_narrowing():
    from sim2real.tune.search import frechet_change

    t0 = {"mean": 80.0, "spread_sim": 70.0, "spread_real": 9.0, "cross": -14.0}
    narrower = dict(t0, spread_sim=50.0, cross=-12.0)       # -18: the sim set got less varied
    closer = dict(t0, mean=60.0, spread_sim=68.0)          # -22: content closer, spread about the same
    c = frechet_change(t0, narrower)
    assert c["narrowing"] == pytest.approx(18.0) and c["content"] == 0 and c["mostly_narrowing"]
    c = frechet_change(t0, closer)
    assert c["content"] == pytest.approx(20.0) and c["narrowing"] == pytest.approx(2.0) and not c["mostly_narrowing"]
    assert not frechet_change(t0, dict(t0, mean=90.0, spread_sim=60.0))["mostly_narrowing"]   # no reduction at all


def _errors(capsys, *args: str) -> tuple[int, list[str]]:
    from sim2real.cli import main

    rc = main(["tune", *args])
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


@pytest.mark.parametrize("args, key", [
    (["search.params=[bogus]"], "search.params"),
    (["attribution.groups=[colour]"], "attribution.groups"),
    (["--scene", "nowhere.yaml"], "scene"),
    (["--footage", "no_such_clip.mp4"], "no_such_clip.mp4"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, key):
    rc, lines = _errors(capsys, "--out", str(tmp_path / "run"), "--no-wandb", *args)
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("sim2real tune: error:") and key in lines[0], lines
    assert not (tmp_path / "run").exists()      # nothing written before the input is known good


@pytest.mark.needs_data("visp")
def test_cli_refuses_evaluation_frames(tmp_path, capsys):
    rc, lines = _errors(capsys, "--out", str(tmp_path / "run"), "--no-wandb", "footage_frames=[90,120]")
    assert rc == 2
    assert len(lines) == 1 and "evaluation-only" in lines[0], lines


def _scene_result(*runs: dict) -> dict:
    from sim2real.tune.verify import summarise

    mean, spread = summarise([{s: {"n": 20, **m} for s, m in r.items()} for r in runs])
    return {"runs": list(runs), "real": mean, "spread": spread}


def test_verify_verdict_says_plainly_when_the_tuned_scene_is_not_better():
    from sim2real.tune.verify import verdict

    orig = _scene_result({"val": {"ap50": 1.0, "center_err_px_median": 2.0, "box_iou_mean": 0.8},
                          "test": {"ap50": 1.0, "center_err_px_median": 2.5, "box_iou_mean": 0.8}})
    worse = _scene_result({"val": {"ap50": 1.0, "center_err_px_median": 3.0, "box_iou_mean": 0.85},
                           "test": {"ap50": 1.0, "center_err_px_median": 1.0, "box_iou_mean": 0.9}})
    v = verdict(orig, worse)
    assert v["judged_on"] == "val" and not v["not_worse"]
    assert v["text"].startswith("the tuned scene is NOT better on real val: worse on center_err_px_median")
    assert v["per_set"]["test"] == {"ap50": "same", "center_err_px_median": "better", "box_iou_mean": "better"}
    better = _scene_result({"val": {"ap50": 1.0, "center_err_px_median": 1.5, "box_iou_mean": None}})
    v = verdict(_scene_result({"val": orig["runs"][0]["val"]}), better)
    assert v["not_worse"] and "better on real val (center_err_px_median)" in v["text"]


def test_verify_verdict_judges_the_tuned_mean_against_the_original_seed_spread():
    from sim2real.tune.verify import verdict

    # the original's two training seeds: AP50 0.7 and 1.0, centre error 3.0 and 4.0 px
    orig = _scene_result({"val": {"ap50": 0.7, "center_err_px_median": 3.0}, "test": {"ap50": 1.0}},
                         {"val": {"ap50": 1.0, "center_err_px_median": 4.0}, "test": {"ap50": 1.0}})
    assert orig["real"]["val"]["ap50"] == pytest.approx(0.85) and orig["spread"]["val"]["ap50"] == [0.7, 1.0]
    # tuned mean inside the spread (AP50 0.8 < the original's mean 0.85): "same", not worse;
    # a much worse TEST split never decides the verdict
    inside = _scene_result({"val": {"ap50": 0.75, "center_err_px_median": 3.5}, "test": {"ap50": 0.2}},
                           {"val": {"ap50": 0.85, "center_err_px_median": 3.9}, "test": {"ap50": 0.3}})
    v = verdict(orig, inside)
    assert v["per_set"]["val"] == {"ap50": "same", "center_err_px_median": "same"}
    assert v["per_set"]["test"]["ap50"] == "worse"
    assert v["not_worse"] and v["text"].startswith("the tuned scene is no better and no worse on real val")
    assert "2-seed spread" in v["text"]
    # below the original's worst seed: worse; past its best seed: better
    below = _scene_result({"val": {"ap50": 0.6, "center_err_px_median": 2.5}, "test": {"ap50": 1.0}},
                          {"val": {"ap50": 0.75, "center_err_px_median": 2.9}, "test": {"ap50": 1.0}})
    v = verdict(orig, below)
    assert v["per_set"]["val"] == {"ap50": "worse", "center_err_px_median": "better"} and not v["not_worse"]


def test_verify_seeds_are_validated(tmp_path, capsys):
    rc, lines = _errors(capsys, "--out", str(tmp_path / "run"), "--no-wandb", "verify.seeds=[0,0]")
    assert rc == 2 and len(lines) == 1 and "verify.seeds" in lines[0], lines


def test_search_objective_both_weighs_each_distance_by_the_hand_written_scene(tmp_path, prober, real):
    r = run_search(TOY, real, prober, tmp_path / "both", params=["postprocess.noise_prob", "postprocess.gamma.center"],
                   trials=4, frames=8, seed=3, startup_trials=2, objective="both")
    ref = r["reference"]
    assert r["objective"] == "both" and r["trials"][0]["value"] == pytest.approx(2.0)   # trial 0 = the scene
    for t in r["trials"]:
        assert t["value"] == pytest.approx(t["frechet"] / ref["frechet"] + t["mmd"] / ref["mmd"])
    assert len({t["params"]["postprocess.gamma.center"] for t in r["trials"]}) == 4    # gamma is searched
    with pytest.raises(ValueError, match="objective"):
        run_search(TOY, real, prober, tmp_path / "bad", params=["postprocess.noise_prob"], trials=1, frames=8,
                   objective="sum")


def test_gamma_knob_writes_a_valid_tone_curve():
    from sim2real_envs.config import load_scene

    scene = copy.deepcopy(TOY)
    assert knobs.current_values(scene, ["postprocess.gamma.center", "postprocess.gamma.half_width"]) == {
        "postprocess.gamma.center": 1.0, "postprocess.gamma.half_width": 0.0}   # absent = off
    tuned = knobs.apply_params(scene, {"postprocess.gamma.center": 1.5, "postprocess.gamma.half_width": 0.1})
    assert tuned["postprocess"]["gamma"] == [1.4, 1.6]
    assert load_scene(tuned).postprocess.gamma == [1.4, 1.6]


def test_verify_trains_one_model_per_seed_on_one_data_set(tmp_path):
    """run_verify end to end on the toy scene (16 frames, 1 epoch): one generated set per scene, one
    model per training seed, the mean and spread over the seeds, the verdict from them; the "real"
    labels are a COCO set rendered from the toy real scene (any COCO file works as real_labels)."""
    from sim2real.data.generate import GenerateConfig, generate
    from sim2real.tune.config import TuneConfig
    from sim2real.tune.verify import run_verify

    scenes = {}
    for name, scene in (("original", TOY), ("tuned", real_scene())):
        scenes[name] = tmp_path / f"{name}.yaml"
        scenes[name].write_text(yaml.safe_dump(scene))
    labels = tmp_path / "real"
    g = GenerateConfig(out=str(labels), num_frames=8, workers=1, seed=77, scene_file=str(scenes["tuned"]),
                       progress=False)
    g.grid.enabled = False
    generate(g)
    cfg = TuneConfig(cache_dir=str(tmp_path / "cache"), views_per_scene=4)
    cfg.tracking.mode = "disabled"
    cfg.verify.frames, cfg.verify.epochs, cfg.verify.workers, cfg.verify.seeds = 16, 1, 1, [0, 5]
    cfg.verify.real_labels = str(labels / "annotations.json")
    cfg.verify.train = {"model": {"input_hw": HW}, "batch_size": 8}
    v = run_verify(cfg, scenes, tmp_path / "verify", log=lambda _: None)
    for name in scenes:
        runs = v[name]["runs"]
        assert [r["seed"] for r in runs] == [0, 5]
        assert all((tmp_path / "verify" / name / f"train_seed{s}" / "best.pt").is_file() for s in (0, 5))
        assert len(list((tmp_path / "verify" / name).glob("data*"))) == 1          # generated once
        for k, vals in ((k, [r["real"]["real"][k] for r in runs]) for k in ("ap", "box_iou_mean")):
            if None in vals:
                continue
            assert v[name]["real"]["real"][k] == pytest.approx(sum(vals) / 2)
            assert v[name]["spread"]["real"][k] == [min(vals), max(vals)]
    assert v["budget"]["seeds"] == [0, 5] and v["verdict"]["judged_on"] == "real"
    assert "2-seed spread" in v["verdict"]["text"]
