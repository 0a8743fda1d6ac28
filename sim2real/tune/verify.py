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


def train_config(cfg: TuneConfig, data: Path, run_dir: Path):
    from sim2real.config import load_config
    from sim2real.paths import bundled_config
    from sim2real.train.config import TrainConfig

    v = cfg.verify
    overrides = _flat(v.train) + [f"datasets=[{data}]", f"run_dir={run_dir}", f"epochs={v.epochs}",
                                  "progress=false", f"tracking.mode={cfg.tracking.mode}",
                                  f"seed={cfg.seed}", f"device={cfg.device}"]
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
    """Generate, train and score each of ``scenes`` (``{"original": yaml, "tuned": yaml}``) on one budget."""
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
        run_dir = out / name / "train"
        resume = (run_dir / "checkpoint.pt").is_file()
        r = train(train_config(cfg, data, run_dir), resume=resume)
        results[name] = {"scene_file": str(scene_file), "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                         "sim_val": {k: r.best.get(k) for k, _ in METRICS if isinstance(r.best.get(k), float)},
                         "real": score(run_dir / "best.pt", sets, cfg.device, v.real_image_root),
                         "seconds": round(time.perf_counter() - t0, 1)}
        log(f"verify {name}: {results[name]['real']}")
    results["verdict"] = verdict(results["original"]["real"], results["tuned"]["real"])
    results["budget"] = {"frames": v.frames, "epochs": v.epochs, "data_seed": v.data_seed, "train": v.train}
    return results


def verdict(orig: dict[str, dict], tuned: dict[str, dict]) -> dict[str, Any]:
    """Per real set and metric: better / worse / same; and one plain sentence."""
    per: dict[str, dict[str, str]] = {}
    for s, before in orig.items():
        per[s] = {}
        for k, higher in METRICS:
            a, b = before.get(k), tuned[s].get(k)
            if a is None or b is None:
                continue
            per[s][k] = "same" if a == b else ("better" if (b > a) == higher else "worse")
    key = "val" if "val" in per else next(iter(per))
    worse = [k for k, w in per[key].items() if w == "worse"]
    better = [k for k, w in per[key].items() if w == "better"]
    if not worse and better:
        text = f"the tuned scene is better on real {key} ({', '.join(better)}) and worse on none"
    elif not worse:
        text = f"the tuned scene is no better and no worse on real {key}"
    else:
        text = (f"the tuned scene is NOT better on real {key}: worse on {', '.join(worse)}"
                + (f", better on {', '.join(better)}" if better else ""))
    return {"per_set": per, "judged_on": key, "text": text, "not_worse": not worse}
