"""Search: tune a handful of continuous ranges and probabilities to minimise the label-free gap.

optuna's TPE sampler over :data:`sim2real.tune.knobs.SEARCH_SPACE`, the study kept in SQLite in the
run folder (``search.db``), so a killed run resumes where it stopped. Deterministic for a seed,
resumed or not: each trial's sampler is seeded from ``(seed, number of completed trials)`` and
sees only completed trials, every trial renders the same frames (same seed, so trials differ only
in their parameters) and their features are cached. The first trial is the hand-written scene's
own values, so the tuned scene is never worse than the original on the search's samples. Labels
are never read here.
"""

from __future__ import annotations

import copy
import difflib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim2real.gap.distances import frechet_terms
from sim2real.io import atomic_write_text
from sim2real.tune.attribution import gaps
from sim2real.tune.knobs import SEARCH_SPACE, apply_params, current_values
from sim2real.tune.probe import Prober, scene_identity

STUDY = "sim2real-tune"
OBJECTIVES = ("metric", "both")
DB = "search.db"


def _optuna():
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # multivariate TPE is "experimental" in optuna; it models the ranges' centre and width together.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_study(out: Path):
    optuna = _optuna()
    out.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / DB).resolve()}")
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize", load_if_exists=True)
    return study, storage


def _fail_interrupted(study, storage) -> int:
    """Trials left RUNNING by a killed run are marked FAIL (the sampler ignores them); how many."""
    optuna = _optuna()
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for t in stale:
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return len(stale)


def completed(study) -> list:
    optuna = _optuna()
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def run_search(scene: dict, real: np.ndarray, prober: Prober, out: Path, *, params: Sequence[str], trials: int,
               frames: int, seed: int = 0, metric: str = "frechet", minutes: float = 0.0, startup_trials: int = 8,
               objective: str = "metric", on_trial: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the study until ``trials`` trials are complete or ``minutes`` have passed.

    ``objective``: ``metric`` minimises ``feat_<metric>``; ``both`` minimises
    ``feat_frechet / ref_frechet + feat_mmd / ref_mmd`` (each distance relative to the hand-written
    scene's on the same frames, so the hand-written scene scores 2.0 and neither distance can be
    traded away for the other unnoticed)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"search objective {objective!r}: expected one of {OBJECTIVES}")
    optuna = _optuna()
    study, storage = open_study(out)
    interrupted = _fail_interrupted(study, storage)
    # The MMD bandwidth: fixed by the scene's own probe, so trial values compare with each other.
    ref = gaps(prober.sim_features(scene, frames, seed), real)
    sigma = ref["mmd_sigma"]
    t0, c0 = time.perf_counter(), time.process_time()
    names = list(params)

    def value(g: dict) -> float:
        if objective == "both":
            return g["frechet"] / max(ref["frechet"], 1e-12) + g["mmd"] / max(ref["mmd"], 1e-12)
        return g[metric]

    def objective_fn(trial) -> float:
        values = {n: trial.suggest_float(n, SEARCH_SPACE[n].low, SEARCH_SPACE[n].high) for n in names}
        g = gaps(prober.sim_features(apply_params(scene, values), frames, seed), real, sigma)
        trial.set_user_attr("frechet", g["frechet"])
        trial.set_user_attr("mmd", g["mmd"])
        return value(g)

    while len(done := completed(study)) < trials:
        if minutes and time.perf_counter() - t0 > 60 * minutes:
            break
        n = len(done)
        waiting = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.WAITING]
        if n == 0 and not waiting:
            study.enqueue_trial(current_values(scene, names))   # trial 0: the hand-written scene
        study.sampler = optuna.samplers.TPESampler(seed=(int(seed) * 1_000_003 + n) % 2**32,
                                                   n_startup_trials=startup_trials, multivariate=True)
        study.optimize(objective_fn, n_trials=1)
        if on_trial is not None:
            last = study.get_trials(deepcopy=False)[-1]
            if last.state == optuna.trial.TrialState.COMPLETE:
                on_trial(trial_record(last, len(completed(study)) - 1, study.best_value))
    done = completed(study)
    if not done:
        raise ValueError(f"{out / DB}: no completed search trial (budget search.minutes={minutes} too small?)")
    return {"metric": metric, "objective": objective, "objective_name": objective_name(objective, metric),
            "reference": {d: ref[d] for d in ("frechet", "mmd")},
            "frames": frames, "seed": seed, "mmd_sigma": sigma, "params": names,
            "trials": [trial_record(t, i) for i, t in enumerate(done)], "best": trial_record(study.best_trial),
            "interrupted_trials": interrupted, "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1)}


def objective_name(objective: str, metric: str) -> str:
    """How the searched value reads in logs, plots and reports."""
    return "feat_frechet/ref + feat_mmd/ref" if objective == "both" else f"feat_{metric}"


def trial_record(t, index: int | None = None, best: float | None = None) -> dict[str, Any]:
    rec = {"trial": t.number, "value": t.value, "params": dict(t.params), **t.user_attrs}
    if index is not None:
        rec["index"] = index
    if best is not None:
        rec["best_so_far"] = best
    return rec


# --------------------------------------------------------------------------------- tuned scene


def _dump(scene: dict) -> str:
    return yaml.safe_dump(scene_identity(scene), sort_keys=False, default_flow_style=None, width=100)


def write_tuned_scene(scene: dict, tuned: dict, scene_file: Path, out: Path, note: str) -> tuple[Path, Path]:
    """``<out>/<stem>.tuned.yaml`` (validated as any scene) and ``<out>/<stem>.tuned.diff`` (unified diff
    of the two scenes as YAML). Relative asset paths keep resolving next to the ORIGINAL scene file
    (``base_dir``)."""
    from sim2real_envs.config import load_scene

    stem = scene_file.name.rsplit(".", 1)[0]
    path, diff_path = out / f"{stem}.tuned.yaml", out / f"{stem}.tuned.diff"
    header = "".join(f"# {line}\n" for line in note.splitlines())
    body = _dump(tuned)
    base_dir = scene.get("base_dir") or str(scene_file.resolve().parent)
    atomic_write_text(path, header + body + yaml.safe_dump({"base_dir": base_dir}))
    load_scene(path)   # the same validation as any scene; a SceneConfigError names the key
    diff = difflib.unified_diff(_dump(scene).splitlines(keepends=True), body.splitlines(keepends=True),
                                fromfile=str(scene_file), tofile=str(path))
    atomic_write_text(diff_path, "".join(diff))
    return path, diff_path


def holdout(scene: dict, tuned: dict, real: np.ndarray, prober: Prober, frames: int, seed: int) -> dict[str, Any]:
    """Both scenes on a fresh render (``seed`` unseen by the search): gaps and the relative reduction."""
    orig, new = prober.sim_features(scene, frames, seed), prober.sim_features(tuned, frames, seed)
    sigma = gaps(orig, real)["mmd_sigma"]
    g0, g1 = gaps(orig, real, sigma), gaps(new, real, sigma)
    t0, t1 = frechet_terms(orig, real), frechet_terms(new, real)
    return {"frames": frames, "seed": seed, "mmd_sigma": sigma,
            "original": {d: g0[d] for d in ("frechet", "mmd")}, "tuned": {d: g1[d] for d in ("frechet", "mmd")},
            "reduction": {d: 1.0 - g1[d] / max(g0[d], 1e-12) for d in ("frechet", "mmd")},
            "frechet_terms": {"original": t0, "tuned": t1}, "frechet_change": frechet_change(t0, t1)}


def frechet_change(t0: dict[str, float], t1: dict[str, float]) -> dict[str, Any]:
    """Where a Fréchet reduction came from (terms of :func:`sim2real.gap.distances.frechet_terms`):
    ``content`` = the mean offset's drop, ``narrowing`` = the drop of the sim set's own spread plus
    the cross term's change (what a less varied scene gives against one static clip), and whether
    the narrowing is most of it: then the scene got closer mainly by randomizing less, and
    randomization is what the detector's robustness comes from (docs/benchmarks.md "What the gap can give")."""
    content = t0["mean"] - t1["mean"]
    narrowing = (t0["spread_sim"] + t0["cross"]) - (t1["spread_sim"] + t1["cross"])
    total = content + narrowing
    return {"content": content, "narrowing": narrowing,
            "mostly_narrowing": bool(total > 0 and narrowing > 0.5 * total)}


def tuned_scene(scene: dict, best_params: dict) -> dict:
    return apply_params(copy.deepcopy(scene), best_params)


def plot_curve(search: dict, path: Path) -> Path:
    """Objective per completed trial and the best so far."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    values = [t["value"] for t in search["trials"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    name = search.get("objective_name", f"feat_{search['metric']}")
    ax.plot(range(len(values)), values, "o", ms=4, label=f"trial {name}")
    ax.plot(range(len(values)), np.minimum.accumulate(values), "-", label="best so far")
    if values:
        ax.axhline(values[0], color="0.5", ls="--", lw=0.8, label="hand-written scene (trial 0)")
    ax.set_xlabel("completed trial")
    ax.set_ylabel(f"{name} (search frames)")
    ax.legend(fontsize=8)
    ax.set_title("Search: label-free gap per trial")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
