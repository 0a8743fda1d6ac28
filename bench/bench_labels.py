"""Label curve (issue 16): real test error against k for suggested vs random k-shot frames.

On the ViSP cube development labels (adapt's default splits: pool 0-45, val 48-67, test 70-99):

1. ``sim2real suggest-labels`` ranks the pool frames (the checkpoint's features + uncertainty; SUGGEST =
   its ``key=value`` overrides, space-separated): once with ``strategy=kcenter``, once per k with
   ``strategy=typiclust`` (``budget=k``: its selection depends on k) in OUT/suggest_k{k};
2. for every k in KS, adapt from the same checkpoint with the same budget and the same val/test
   splits, only the k-shot set differs:
   - ``suggested``: the first k of the ranked list (``kshot_list=suggestions.json``);
   - ``random``: the first k of a seeded random permutation of the pool (one list per seed, so the
     sets are nested across k), RANDOM_SEEDS seeds;
   both arms reach adapt through the same ``kshot_list`` path; ``ARMS=suggested,random,default`` adds
   adapt's own draw without a list (``split_seed`` = each seed: a seeded first frame, then the frames
   farthest in time);
3. real test metrics of the selected model (frames 70-99): 2D centre error px median, 6D pose centre
   error cm median, AP50; mean and min-max over seeds per (arm, k).

The suggestion is deterministic (k-means seeded with ``seed``, default 0; k-centre's first pick the
medoid) and adapt's own seed is 0 for every run, so ``suggested`` is one run per k; the random arm's
spread is the frame draw's.

Writes OUT/label_curve.{json,csv,md,png}, OUT/report.html and a W&B offline run in OUT.
Every run reuses one feature bank, and features are cached in OUT/cache, seeded with links to the
entries of SRC_CACHE (entries are never modified in place, so SRC_CACHE is only read).

Run (defaults shown)::

    CKPT=/work/exp/bp/twin_run/best.pt SIM_DATA=/work/exp/bp/twin_data SRC_CACHE=/work/exp/bp/cache \\
    OUT=runs/bench_labels KS=1,2,5,10,20 RANDOM_SEEDS=0,1,2 SUGGEST="" \\
    OMP_NUM_THREADS=2 nice -n 10 python bench/bench_labels.py [adapt key=value ...]

Adapt budget (short, so the curve fits in ~20-30 min on two shared cores): coral, head-only
(``unfreeze_epochs=[]``), 3 epochs x 8 steps, batches sim 8 / real 8 / unlabelled 8, sim val 16, no baselines; extra ``key=value``
arguments override it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sim2real.adapt.config import AdaptConfig
from sim2real.adapt.label_list import FORMAT
from sim2real.adapt.label_report import html_table, plot_label_curve, write_html
from sim2real.adapt.suggest_run import SuggestConfig, suggest
from sim2real.adapt.trainer import AdaptSession
from sim2real.config import load_config
from sim2real.data.real_visp import VISP_CUBE_SPLIT_DEFAULTS, load_visp_cube_dev
from sim2real.data.splits import make_splits
from sim2real.io import atomic_write_json, atomic_write_text
from sim2real.tracking import TrackingConfig, make_logger

CKPT = os.environ.get("CKPT", "/work/exp/bp/twin_run/best.pt")
SIM_DATA = os.environ.get("SIM_DATA", "/work/exp/bp/twin_data")
SRC_CACHE = os.environ.get("SRC_CACHE", "/work/exp/bp/cache")
OUT = Path(os.environ.get("OUT", "runs/bench_labels"))
KS = [int(k) for k in os.environ.get("KS", "1,2,5,10,20").split(",")]
RANDOM_SEEDS = [int(s) for s in os.environ.get("RANDOM_SEEDS", "0,1,2").split(",")]
# "default" = adapt's own k-shot draw without a list (seeded first frame, then farthest in time), per seed
ARMS = os.environ.get("ARMS", "suggested,random").split(",")
SUGGEST = os.environ.get("SUGGEST", "").split()
BUDGET = ["methods=[coral]", "unfreeze_epochs=[]", "epochs=3", "steps_per_epoch=8", "batch_size_sim=8",
          "batch_size_unlabelled=8", "sim_val_max=16", "patience=0",
          "baselines=false", "progress=false", "tracking.mode=disabled", "seed=0"]
METRICS = [("real/center_err_px_median", "center_err_px_median", "2D centre error px (median)"),
           ("real/pose_center_err_cm_median", "pose_center_err_cm_median", "pose centre error cm (median)"),
           ("real/ap50", "ap50", "AP50")]


def seeded_cache(out: Path) -> Path:
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    src = Path(SRC_CACHE)
    if src.is_dir():
        for entry in src.iterdir():
            link = cache / entry.name
            if entry.is_dir() and not entry.name.startswith(".") and not link.exists():
                link.symlink_to(entry.resolve(), target_is_directory=True)
    return cache


def random_list(path: Path, pool_rows: list[dict], seed: int) -> Path:
    """A seeded random permutation of the pool in the suggestion-list format (nested across k)."""
    order = np.random.default_rng([seed, 16]).permutation(len(pool_rows))
    rows = [{**pool_rows[j], "rank": n + 1} for n, j in enumerate(order)]
    atomic_write_json(path, {"format": FORMAT, "source": f"random permutation of the pool, seed {seed}",
                             "suggestions": rows}, indent=1)
    return path


def main(argv: list[str]) -> int:
    t_start = time.perf_counter()
    load0 = loadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    cache = seeded_cache(OUT)
    # 1. the suggestion (ViSP pool, adapt's default splits)
    t0 = time.perf_counter()
    base = load_config(SuggestConfig, None, [f"checkpoint={CKPT}", *SUGGEST])
    per_k = base.strategy == "typiclust"   # the selection depends on the budget: one list per k
    sug_dirs = {k: OUT / (f"suggest_k{k}" if per_k else "suggest") for k in KS}
    for k, d in sug_dirs.items():
        if not (d / "suggestions.json").exists():
            scfg = load_config(SuggestConfig, None, [f"checkpoint={CKPT}", *SUGGEST, f"run_dir={d}",
                                                     *([f"budget={k}"] if per_k else [])])
            suggest(scfg)
    suggest_s = time.perf_counter() - t0
    sug_dir = sug_dirs[max(KS)]
    sug = json.loads((sug_dir / "suggestions.json").read_text())
    pool_rows = sorted(({"frame": r["frame"], "file_name": r["file_name"], "path": r["path"]}
                        for r in sug["suggestions"]), key=lambda r: r["frame"])
    coco = load_visp_cube_dev()
    splits = make_splits(coco, k=0, seed=0, **VISP_CUBE_SPLIT_DEFAULTS)
    pool = sorted(splits.frames[i] for i in splits["pool"])
    assert [r["frame"] for r in pool_rows] == pool, "the suggestion must rank exactly the adapt pool"
    lists: dict = {}
    if "suggested" in ARMS:
        lists[("suggested", None)] = {k: d / "suggestions.json" for k, d in sug_dirs.items()}
    for s in RANDOM_SEEDS:
        if "random" in ARMS:
            lists[("random", s)] = random_list(OUT / f"random_seed{s}.json", pool_rows, s)
        if "default" in ARMS:
            lists[("default", s)] = None
    # 2. the runs
    bank = None
    runs = []
    done = {}
    runs_path = OUT / "runs.jsonl"
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["arm"], r["seed"], r["k"])] = r
    for k in KS:
        for (arm, seed), lst in lists.items():
            lst = lst[k] if isinstance(lst, dict) else lst
            key = (arm, seed, k)
            if key in done:   # resumable: a killed bench redoes only the missing runs
                runs.append(done[key])
                continue
            run_dir = OUT / "runs" / f"{arm}{'' if seed is None else f'_seed{seed}'}_k{k}"
            cfg = load_config(AdaptConfig, None, [f"checkpoint={CKPT}", f"sim_dataset={SIM_DATA}",
                                                  f"cache_dir={cache}", f"run_dir={run_dir}", f"k={k}",
                                                  *([f"kshot_list={lst}"] if lst else [f"split_seed={seed}"]),
                                                  *BUDGET, *argv])
            cfg.validate()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sess = AdaptSession(cfg, bank=bank)
                bank = sess.bank
                res = sess.adapt(cfg.methods)
            test = res.real_test or {}
            rec = {"arm": arm, "seed": seed, "k": k, "frames": [sess.data.splits.frames[i] for i in sess.data.splits["train"]],
                   "best_epoch": res.best_epoch, "wall_s": round(time.perf_counter() - t0, 1),
                   **{m: test.get(key2) for m, key2, _ in METRICS},
                   # real val (frames 48-67, model selection): what a method choice may look at; test may not
                   **{m.replace("real/", "val/"): (res.real_val or {}).get(key2) for m, key2, _ in METRICS}}
            runs.append(rec)
            with open(runs_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(f"{arm:>9} seed={seed} k={k:>2}: frames {rec['frames']} -> centre {_f(rec[METRICS[0][0]])} px, "
                  f"pose {_f(rec[METRICS[1][0]])} cm, AP50 {_f(rec[METRICS[2][0]])} ({rec['wall_s']} s)", flush=True)
    # 3. the table
    table = []
    for arm in [a for a in ("suggested", "random", "default") if a in ARMS]:
        for k in KS:
            rs = [r for r in runs if r["arm"] == arm and r["k"] == k]
            row = {"arm": arm, "k": k, "runs": len(rs)}
            for m, _, _ in METRICS:
                v = np.array([np.nan if r[m] is None else r[m] for r in rs], float)
                short = m.split("/")[1]
                row[f"{short}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
                row[f"{short}_min"] = float(np.nanmin(v)) if np.isfinite(v).any() else math.nan
                row[f"{short}_max"] = float(np.nanmax(v)) if np.isfinite(v).any() else math.nan
            table.append(row)
    verdict = []
    for k in (5, 10):
        if k not in KS or not {"suggested", "random"} <= set(ARMS):
            continue
        s = next(r for r in table if r["arm"] == "suggested" and r["k"] == k)
        r = next(r for r in table if r["arm"] == "random" and r["k"] == k)
        parts = []
        for short, label, lower in (("center_err_px_median", "2D centre error", True),
                                    ("pose_center_err_cm_median", "pose centre error", True), ("ap50", "AP50", False)):
            a, b = s[f"{short}_mean"], r[f"{short}_mean"]
            better = (a < b) if lower else (a > b)
            word = "equal" if a == b else "suggested better" if better else "suggested worse"
            parts.append(f"{label} {a:.3g} vs {b:.3g} ({word})")
        beats = s["center_err_px_median_mean"] < r["center_err_px_median_mean"] and \
            s["pose_center_err_cm_median_mean"] < r["pose_center_err_cm_median_mean"]
        verdict.append(f"k={k}: suggested {'BEATS' if beats else 'does NOT beat'} random (mean over "
                       f"{len(RANDOM_SEEDS)} random seeds): " + "; ".join(parts))
    wall = time.perf_counter() - t_start
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_start": load0, "load_end": loadavg(), "wall_s": round(wall, 1),
            "adapt_runs_wall_s": round(sum(r["wall_s"] for r in runs), 1),
            "suggest_s": round(suggest_s, 1), "checkpoint": CKPT, "sim_data": SIM_DATA, "ks": KS,
            "random_seeds": RANDOM_SEEDS, "budget": BUDGET + list(argv),
            "suggest": {"overrides": SUGGEST, "method": sug["method"],
                        "object_feature_fallback": sug.get("object_feature_fallback")},
            "suggested_frames": {k: [r["frame"] for r in json.loads((d / "suggestions.json").read_text())
                                     ["suggestions"][:k]] for k, d in sug_dirs.items()}}
    atomic_write_json(OUT / "label_curve.json", {"meta": meta, "table": table, "runs": runs, "verdict": verdict},
                      indent=1)
    cols = ["arm", "k", "runs"] + [f"{m.split('/')[1]}_{s}" for m, _, _ in METRICS for s in ("mean", "min", "max")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    w.writerows(table)
    atomic_write_text(OUT / "label_curve.csv", buf.getvalue())
    md = ["| arm | k | runs | centre err px (mean, min-max) | pose centre err cm (mean, min-max) | AP50 (mean) |",
          "|---|---|---|---|---|---|"]
    for r in table:
        md.append(f"| {r['arm']} | {r['k']} | {r['runs']} | {_f(r['center_err_px_median_mean'])} "
                  f"({_f(r['center_err_px_median_min'])}-{_f(r['center_err_px_median_max'])}) | "
                  f"{_f(r['pose_center_err_cm_median_mean'])} ({_f(r['pose_center_err_cm_median_min'])}-"
                  f"{_f(r['pose_center_err_cm_median_max'])}) | {_f(r['ap50_mean'])} |")
    atomic_write_text(OUT / "label_curve.md", "\n".join(md + [""] + verdict) + "\n")
    plot_label_curve(table, [(m.split("/")[1], label) for m, _, label in METRICS], OUT / "label_curve.png")
    intro = (f"<p>ViSP cube dev labels, real test split frames 70-99; k-shot pool frames 0-45, val 48-67 for "
             f"every run. {meta['date']}, {meta['cpus']} CPUs, load {' '.join(meta['load_start'])} -> "
             f"{' '.join(meta['load_end'])}, wall of this invocation {wall / 60:.1f} min; the {len(runs)} adapt runs "
             f"took {meta['adapt_runs_wall_s'] / 60:.1f} min (runs.jsonl keeps each run's own wall time when a "
             f"bench is resumed). Budget: {' '.join(meta['budget'])}.</p>"
             + "".join(f"<p><b>{html_escape(v)}</b></p>" for v in verdict))
    write_html(OUT / "report.html", "sim2real: which frames to label (label curve)",
               [("Label curve", intro + html_table(table, cols)),
                ("Suggested frames per k", "<p>" + ("TypiClust, one list per k (k-means into k clusters, the most "
                                                     "typical frame of each)" if per_k else
                                                     html_escape(meta['suggest']['method']['selection']))
                 + f"; features: "
                 f"{html_escape(meta['suggest']['method']['features'])}</p><ul>"
                 + "".join(f"<li>k={k}: {', '.join(str(f) for f in fr)}</li>" for k, fr in
                           meta["suggested_frames"].items()) + "</ul>")],
               {"Real test error against k": OUT / "label_curve.png",
                "Suggested frames (contact sheet)": sug_dir / "contact_sheet.png"})
    logger = make_logger(OUT, TrackingConfig(mode=os.environ.get("WANDB_MODE_BENCH", "offline")),
                         {"bench": "labels", **{k: v for k, v in meta.items() if k != "suggested_frames"}})
    try:
        for r in table:
            logger.log({f"label_curve/{r['arm']}/{k}": v for k, v in r.items() if k not in ("arm",)}, step=r["k"])
        logger.log_media("label_curve/plot", OUT / "label_curve.png", kind="image")
        logger.log_media("label_curve/report", OUT / "report.html", kind="html")
        logger.summary({"verdict": " | ".join(verdict), "wall_s": round(wall, 1),
                        "suggest_strategy": sug["method"].get("strategy", "kcenter"),
                        "suggest_features": sug["method"]["features"]})
    finally:
        logger.close()
    print("\n".join(md))
    print("\n".join(verdict))
    print(f"{OUT}: label_curve.json/.csv/.md/.png, report.html; wall {wall / 60:.1f} min, load "
          f"{' '.join(meta['load_start'])} -> {' '.join(meta['load_end'])}")
    return 0


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def html_escape(s: str) -> str:
    import html

    return html.escape(s)


def _f(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
