"""Verify: does the tuned scene train a better source-only model for the real camera?

The original and the tuned scene each get the same budget: ``sim2real generate`` (same frame count
and seed), ``sim2real train`` (same config), then ``sim2real evaluate``'s scoring on the real
labelled frames (ViSP cube: validation 48-67 and test 70-99 of the development labels). Real labels
are read here only, never by attribution or the search. The verdict says plainly when the tuned
scene is not better.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from sim2real.tune.config import VISP, TuneConfig

# (metric, higher is better) reported for each real set; names as in `sim2real evaluate`.
METRICS = (("ap50", True), ("ap", True), ("center_err_px_median", False), ("box_iou_mean", True),
           ("pose_center_err_cm_median", False))


def real_sets(cfg: TuneConfig, out: Path) -> dict[str, Path]:
    """``{"val": annotations.json, "test": ...}`` for ViSP (the adapt splits' val and test), else
    ``{"real": <the given COCO file>}``."""
    from sim2real.data.real import export_coco
    from sim2real.data.real_visp import VISP_CUBE_SPLIT_DEFAULTS, load_visp_cube_dev
    from sim2real.data.splits import make_splits

    v = cfg.verify
    if v.real_labels != VISP:
        return {"real": Path(v.real_labels)}
    coco = load_visp_cube_dev()
    splits = make_splits(coco, k=0, seed=0, **VISP_CUBE_SPLIT_DEFAULTS)
    return {s: export_coco(coco.subset(splits[s]), out / "real" / s, copy_images=False, name=s) for s in ("val", "test")}


def _flat(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={json.dumps(v)}")
    return out


def train_config(cfg: TuneConfig, data: Path, run_dir: Path, seed: int | None = None):
    from sim2real.config import load_config
    from sim2real.paths import bundled_config
    from sim2real.train.config import TrainConfig

    v = cfg.verify
    overrides = _flat(v.train) + [f"datasets=[{data}]", f"run_dir={run_dir}", f"epochs={v.epochs}",
                                  "progress=false", f"tracking.mode={cfg.tracking.mode}",
                                  f"seed={cfg.seed if seed is None else seed}", f"device={cfg.device}"]
    if cfg.cache_dir:
        overrides.append(f"cache_dir={cfg.cache_dir}")
    return load_config(TrainConfig, bundled_config("configs/train_sim.yaml"), overrides)


def score(checkpoint: Path, sets: dict[str, Path], device: str, image_root: str | None = None) -> dict[str, dict]:
    """``sim2real evaluate``'s metrics of ``checkpoint`` on each real set."""
    from sim2real.data.dataset import CocoDataset
    from sim2real.eval.dataset import evaluate_dataset
    from sim2real.eval.model import load_model, trained_tasks

    model, dev, meta = load_model(str(checkpoint), device)
    out = {}
    for name, ann in sets.items():
        ds = CocoDataset(ann, image_root=image_root if name == "real" else None, classes=model.classes,
                         num_keypoints=model.num_keypoints)
        m = evaluate_dataset(model, ds, trained_tasks(meta), device=dev)
        out[name] = {"n": m.get("n"), **{k: _finite(m.get(k)) for k, _ in METRICS}}
    return out


def _finite(v: Any) -> float | None:
    """A metric value, or None where it is undefined (NaN: nothing matched)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def run_verify(cfg: TuneConfig, scenes: dict[str, Path], out: Path, log=print) -> dict[str, Any]:
    """Generate each of ``scenes`` (``{"original": yaml, "tuned": yaml}``) once, train one model per
    training seed (``verify.seeds``) on it, score each on the real sets; one budget for every scene."""
    from sim2real.data.generate import GenerateConfig, ResumeError, generate
    from sim2real.train.trainer import train

    v = cfg.verify
    sets = real_sets(cfg, out)
    results: dict[str, Any] = {}
    for name, scene_file in scenes.items():
        t0 = time.perf_counter()
        data = out / name / "data"
        gcfg = GenerateConfig(out=str(data), num_frames=v.frames, workers=v.workers, seed=v.data_seed,
                              scene_file=str(scene_file), progress=False)
        gcfg.grid.enabled = False
        gcfg.validate()
        try:
            generate(gcfg)
        except ResumeError:   # an earlier verify of another tuned scene (the search went on): start over
            shutil.rmtree(out / name)
            generate(gcfg)
        runs = []
        for seed in v.seeds:
            t1 = time.perf_counter()
            run_dir = out / name / f"train_seed{seed}"
            resume = (run_dir / "checkpoint.pt").is_file()
            r = train(train_config(cfg, data, run_dir, seed), resume=resume)
            runs.append({"seed": seed, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                         "sim_val": {k: r.best.get(k) for k, _ in METRICS if isinstance(r.best.get(k), float)},
                         "real": score(run_dir / "best.pt", sets, cfg.device, v.real_image_root),
                         "seconds": round(time.perf_counter() - t1, 1)})
            log(f"verify {name} seed {seed}: {runs[-1]['real']}")
        mean, spread = summarise([r["real"] for r in runs])
        results[name] = {"scene_file": str(scene_file), "runs": runs, "real": mean, "spread": spread,
                         "seconds": round(time.perf_counter() - t0, 1)}
    results["verdict"] = verdict(results["original"], results["tuned"])
    results["budget"] = {"frames": v.frames, "epochs": v.epochs, "data_seed": v.data_seed, "seeds": list(v.seeds),
                         "train": v.train}
    return results


def summarise(reals: list[dict[str, dict]]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per real set and metric over the training seeds: the mean (``n`` kept) and ``[min, max]``;
    a metric undefined in every seed stays None."""
    mean: dict[str, dict] = {}
    spread: dict[str, dict] = {}
    for s in reals[0]:
        mean[s], spread[s] = {"n": reals[0][s].get("n")}, {}
        for k, _ in METRICS:
            vals = [r[s][k] for r in reals if r[s].get(k) is not None]
            mean[s][k] = sum(vals) / len(vals) if vals else None
            spread[s][k] = [min(vals), max(vals)] if vals else None
    return mean, spread


def compare(mean: float, spread: list[float], higher: bool) -> str:
    """The tuned scene's seed mean against the original's seed spread ``[min, max]``: ``better`` past
    its best seed, ``worse`` past its worst seed, else ``same`` (within what a training seed moves)."""
    lo, hi = spread
    best, worst = (hi, lo) if higher else (lo, hi)
    if (mean > best) if higher else (mean < best):
        return "better"
    if (mean < worst) if higher else (mean > worst):
        return "worse"
    return "same"


def verdict(orig: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """Per real set and metric: better / worse / same (:func:`compare`: the tuned mean against the
    original's seed spread); the verdict and its sentence are decided on the validation split only
    (``val``; a single given COCO set otherwise), never on the test split."""
    per: dict[str, dict[str, str]] = {}
    for s in orig["real"]:
        per[s] = {}
        for k, higher in METRICS:
            m, sp = tuned["real"][s].get(k), orig["spread"][s].get(k)
            if m is None or sp is None:
                continue
            per[s][k] = compare(m, sp, higher)
    key = "val" if "val" in per else next(iter(per))
    worse = [k for k, w in per[key].items() if w == "worse"]
    better = [k for k, w in per[key].items() if w == "better"]
    n = len(orig.get("runs", [])) or 1
    rule = f"tuned mean vs the original's {n}-seed spread"
    if not worse and better:
        text = f"the tuned scene is better on real {key} ({', '.join(better)}) and worse on none ({rule})"
    elif not worse:
        text = f"the tuned scene is no better and no worse on real {key} ({rule})"
    else:
        text = (f"the tuned scene is NOT better on real {key}: worse on {', '.join(worse)}"
                + (f", better on {', '.join(better)}" if better else "") + f" ({rule})")
    return {"per_set": per, "judged_on": key, "rule": rule, "text": text, "not_worse": not worse}
