"""``sim2real tune``: attribution -> search -> verify in one run folder (see docs/contracts.md "Tune").

The run folder holds ``config.yaml`` + ``run_info.json``, ``attribution.{json,md,png}``,
``search.db`` (the optuna study: a re-run resumes it), ``search.json``, ``search.png``,
``<scene>.tuned.yaml`` + ``<scene>.tuned.diff``, ``holdout.json``, ``verify.json`` (+ ``verify/``),
``tune.json`` (all of it), ``metrics.jsonl`` / ``summary.json`` / W&B, and ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.config import ConfigError, to_dict
from sim2real.io import atomic_write_json, atomic_write_text
from sim2real.tune.config import VISP, TuneConfig

STATE = "search_state.json"
_OUTPUTS = ("attribution.json", "attribution.md", "attribution.png", "search.db", "search.json", "search.png",
            "holdout.json", "verify.json", "tune.json", "report.html", "metrics.jsonl", "summary.json", STATE)


@dataclass
class TuneResult:
    out: Path
    record: dict
    report: Path


def load_scene_dict(scene_file: str) -> tuple[dict, Path]:
    """The scene YAML as a dict, validated like any scene (a bad key: one ConfigError line)."""
    from sim2real.data.generate import resolve_scene_file
    from sim2real_envs.config import SceneConfigError, load_scene, read_scene_file

    path = resolve_scene_file(scene_file)
    try:
        scene = read_scene_file(path)
        load_scene(scene)
    except SceneConfigError as e:
        raise ConfigError("scene_file", f"a valid scene ({e})", source=str(path)) from None
    return scene, path


def load_real(cfg: TuneConfig) -> tuple[list[np.ndarray], str, list[int]]:
    """Unlabelled real frames: ``(images, source id, frame indices)``; the footage readers refuse
    evaluation-only frames (ViSP cube 100-217) whatever range is asked for."""
    from sim2real.data.real_footage import open_footage
    from sim2real.data.real_visp import visp_cube_dev_frames, visp_cube_footage

    ff = tuple(cfg.footage_frames) if cfg.footage_frames else None
    if cfg.footage == VISP:
        footage = visp_cube_footage(frames=range(*ff) if ff else visp_cube_dev_frames(), stride=cfg.footage_stride,
                                    max_frames=cfg.max_real_frames)
    else:
        footage = open_footage(cfg.footage, cfg.footage_stride, ff, cfg.max_real_frames)
    items = footage.read_all()
    if len(items) < 8:
        raise ValueError(f"footage {cfg.footage}: {len(items)} readable frame(s); the gap needs at least 8")
    return [img for _, img in items], str(footage.source), [int(i) for i, _ in items]


def _prepare_out(out: Path, overwrite: bool) -> None:
    from sim2real.io import check_writable

    if overwrite:
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "verify", ignore_errors=True)
    check_writable(out)


def _check_search_state(out: Path, state: dict) -> None:
    """A resumed study must be the same search (scene, footage, frames, params, seed, metric)."""
    path = out / STATE
    if (out / "search.db").is_file() and path.is_file():
        old = json.loads(path.read_text())
        if old != state:
            changed = sorted(k for k in set(old) | set(state) if old.get(k) != state.get(k))
            raise ValueError(f"{out / 'search.db'} holds a search with other settings ({', '.join(changed)} "
                             "changed); pass --overwrite to start over or choose another --out")
    atomic_write_json(path, state, indent=2)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_tune(cfg: TuneConfig, log: Callable[[str], None] = print) -> TuneResult:
    from sim2real.runinfo import seed_everything, write_run_info
    from sim2real.tracking import make_logger
    from sim2real.tune import attribution as A
    from sim2real.tune import search as S
    from sim2real.tune.probe import (
        Embedder,
        FeatureCache,
        Prober,
        describe_cache,
        scene_identity,
    )
    from sim2real.tune.report import write_report

    cfg.validate()
    seed_everything(cfg.seed)
    scene, scene_path = load_scene_dict(cfg.scene_file)
    images, source, frames = load_real(cfg)
    out = Path(cfg.out)
    _prepare_out(out, cfg.overwrite)
    write_run_info(out, cfg, seed=cfg.seed)
    prober = Prober(Embedder(cfg.backbone, cfg.input_hw, cfg.device), FeatureCache(cfg.cache_dir),
                    views_per_scene=cfg.views_per_scene)
    real = prober.real_features(images, source)
    record: dict[str, Any] = {"scene_file": str(scene_path), "real": {"source": source, "frames": len(frames),
                                                                     "first": frames[0], "last": frames[-1]}}
    logger = make_logger(out, cfg.tracking, to_dict(cfg))
    try:
        if cfg.attribution.enabled:
            a = A.run_attribution(scene, real, prober, groups=cfg.attribution.groups, frames=cfg.attribution.frames,
                                  seed=cfg.seed, metric=cfg.metric)
            record["attribution"] = a
            record["domain_check"] = A.domain_consistency(a, scene, images, seed=cfg.seed,
                                                          views_per_scene=cfg.views_per_scene, input_hw=cfg.input_hw)
            a["domain_check"] = record["domain_check"]
            atomic_write_json(out / "attribution.json", a, indent=2)
            atomic_write_text(out / "attribution.md", A.table(a) + "\n")
            A.plot(a, out / "attribution.png")
            log(A.table(a))
            log(f"attribution: {a['seconds']} s; domain check grayscale: expected {record['domain_check']['grayscale_expected']}"
                f", got {record['domain_check']['grayscale_attribution']}")
            logger.summary({f"attribution/{r['group']}/{k}": r[k] for r in a["rows"] if r["change"] is not None
                            for k in ("delta_frechet", "delta_mmd")})
            logger.summary({"attribution/baseline_frechet": a["baseline"]["frechet"],
                            "attribution/baseline_mmd": a["baseline"]["mmd"], "attribution/seconds": a["seconds"]})
            logger.log_media("attribution", out / "attribution.png")
            logger.log_media("attribution_json", out / "attribution.json", kind="file")
        if cfg.search.enabled:
            sc = cfg.search
            _check_search_state(out, {"scene": _hash(scene_identity(scene)), "real": _hash(frames) + source,
                                      "params": sc.params, "frames": sc.frames, "seed": cfg.seed, "metric": cfg.metric,
                                      "startup_trials": sc.startup_trials, "objective": sc.objective,
                                      "backbone": prober.embedder.key["backbone"],
                                      "input_hw": cfg.input_hw, "views_per_scene": cfg.views_per_scene})

            def on_trial(t: dict) -> None:
                logger.log({"search/value": t["value"], "search/best": t["best_so_far"],
                            "search/frechet": t["frechet"], "search/mmd": t["mmd"]}, step=t["index"])
                log(f"trial {t['index']}: {S.objective_name(sc.objective, cfg.metric)} {t['value']:.4g} "
                    f"(best {t['best_so_far']:.4g}; feat_frechet {t['frechet']:.4g}, feat_mmd {t['mmd']:.4g})")

            s = S.run_search(scene, real, prober, out, params=sc.params, trials=sc.trials, frames=sc.frames,
                             seed=cfg.seed, metric=cfg.metric, minutes=sc.minutes, startup_trials=sc.startup_trials,
                             objective=sc.objective, on_trial=on_trial)
            record["search"] = s
            atomic_write_json(out / "search.json", s, indent=2)
            S.plot_curve(s, out / "search.png")
            tuned = S.tuned_scene(scene, s["best"]["params"])
            note = (f"Tuned by `sim2real tune` from {scene_path} against {source} ({len(frames)} unlabelled frames):\n"
                    f"best of {len(s['trials'])} trials, {s['objective_name']} {s['trials'][0]['value']:.4g} -> "
                    f"{s['best']['value']:.4g} on the search's {sc.frames} frames. Diff: see the .diff next to it.")
            tuned_path, diff_path = S.write_tuned_scene(scene, tuned, scene_path, out, note)
            record["tuned_scene"], record["tuned_diff"] = str(tuned_path), str(diff_path)
            h = S.holdout(scene, tuned, real, prober, sc.holdout_frames, sc.holdout_seed)
            record["holdout"] = h
            atomic_write_json(out / "holdout.json", h, indent=2)
            logger.summary({f"holdout/{k}_{d}": h[k][d] for k in ("original", "tuned", "reduction")
                            for d in ("frechet", "mmd")})
            logger.log_media("search_curve", out / "search.png")
            log(f"tuned scene: {tuned_path} (diff: {diff_path})")
            log(f"held-out render ({h['frames']} frames, seed {h['seed']}): feat_frechet {h['original']['frechet']:.4g}"
                f" -> {h['tuned']['frechet']:.4g} (reduction {h['reduction']['frechet']:.1%}), feat_mmd "
                f"{h['original']['mmd']:.4g} -> {h['tuned']['mmd']:.4g} (reduction {h['reduction']['mmd']:.1%})")
            c = h["frechet_change"]
            log(f"  of the feat_frechet change: {c['content']:+.4g} from the mean offset (content), "
                f"{c['narrowing']:+.4g} from the sim spread (narrower randomization)"
                + (": mostly narrowing (closer mainly by randomizing less, which can cost robustness: check verify before using it)"
                   if c["mostly_narrowing"] else ""))
            if cfg.verify.enabled:
                from sim2real.tune.verify import run_verify

                v = run_verify(cfg, {"original": scene_path, "tuned": tuned_path}, out / "verify", log=log)
                record["verify"] = v
                atomic_write_json(out / "verify.json", v, indent=2)
                logger.summary({f"verify/{name}/{s_}/{k}": val for name in ("original", "tuned")
                                for s_, m in v[name]["real"].items() for k, val in m.items()})
                log(f"verify: {v['verdict']['text']}")
        record["cache"] = describe_cache(prober)
        atomic_write_text(out / "tune.json", json.dumps(record, indent=2, default=str))
        report = write_report(out, record)
        logger.log_media("report", report, kind="html")
    finally:
        logger.close()
    return TuneResult(out, record, report)
