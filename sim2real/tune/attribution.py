"""Attribution: which randomization group opens or closes the feature gap to the real footage.

A baseline probe of the scene and one probe per knob group switched off / narrowed, all rendered
with the same seeds (so only the knob differs), embedded by the frozen backbone and compared with
the real frames' features: ``delta = gap(probe) - gap(baseline)`` per distance. Negative = switching
the group off CLOSES the gap (the group, as randomized, makes sim look less like this camera);
positive = it OPENS the gap (the group is needed). Two re-seeded baselines give the seed noise:
a delta smaller than it is "within noise". MMD uses one bandwidth for every probe (the median
heuristic of the baseline vs real), so its values are comparable across probes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.gap.distances import feature_distances
from sim2real.tune.knobs import GROUPS, probe_scene
from sim2real.tune.probe import Prober, render_images

DISTANCES = ("frechet", "mmd")
NOISE_SEEDS = 2   # re-seeded baselines measuring how much a probe moves by chance


def gaps(sim: np.ndarray, real: np.ndarray, bandwidth: float | None = None) -> dict[str, float]:
    """``{"frechet", "mmd", "mmd_sigma"}`` between two feature sets (all rows, fixed MMD bandwidth)."""
    return feature_distances(sim, real, DISTANCES, max_samples=None, bandwidth=bandwidth)


@dataclass
class Row:
    group: str
    what: str
    change: str | None          # what the probe changed; None = the group is already off in this scene
    frechet: float | None = None
    mmd: float | None = None
    delta_frechet: float | None = None
    delta_mmd: float | None = None
    rel_frechet: float | None = None    # delta / baseline
    rel_mmd: float | None = None
    verdict: str = "already off"        # closes | opens | within noise | already off
    seconds: float = 0.0


def verdict(delta: float, noise: float) -> str:
    if delta < -noise:
        return "closes"
    if delta > noise:
        return "opens"
    return "within noise"


def run_attribution(scene: dict, real: np.ndarray, prober: Prober, *, groups: Sequence[str] = (), frames: int = 96,
                    seed: int = 0, metric: str = "frechet") -> dict[str, Any]:
    """The attribution record (``attribution.json``): baseline, seed noise, rows ranked by ``metric``'s delta
    (most closing first), and timings."""
    t0, c0 = time.perf_counter(), time.process_time()
    base = prober.sim_features(scene, frames, seed)
    sigma = feature_distances(base, real, ("mmd",), max_samples=None)["mmd_sigma"]
    base_gap = gaps(base, real, sigma)
    reseeded = [gaps(prober.sim_features(scene, frames, seed + 1 + j), real, sigma) for j in range(NOISE_SEEDS)]
    noise = {d: max(abs(r[d] - base_gap[d]) for r in reseeded) for d in DISTANCES}
    rows = []
    for name in groups or list(GROUPS):
        t = time.perf_counter()
        probed, change = probe_scene(scene, name)
        row = Row(name, GROUPS[name].what, change)
        if change is not None:
            g = gaps(prober.sim_features(probed, frames, seed), real, sigma)
            row.frechet, row.mmd = g["frechet"], g["mmd"]
            row.delta_frechet, row.delta_mmd = g["frechet"] - base_gap["frechet"], g["mmd"] - base_gap["mmd"]
            row.rel_frechet = row.delta_frechet / max(base_gap["frechet"], 1e-12)
            row.rel_mmd = row.delta_mmd / max(base_gap["mmd"], 1e-12)
            row.verdict = verdict(getattr(row, f"delta_{metric}"), noise[metric])
        row.seconds = round(time.perf_counter() - t, 2)
        rows.append(row)
    rows.sort(key=lambda r: (r.change is None, getattr(r, f"delta_{metric}") or 0.0))
    return {"metric": metric, "frames": frames, "seed": seed, "mmd_sigma": sigma,
            "baseline": {d: base_gap[d] for d in DISTANCES},
            "reseeded_baselines": [{d: r[d] for d in DISTANCES} for r in reseeded],
            "noise": noise, "rows": [asdict(r) for r in rows], "seconds": round(time.perf_counter() - t0, 1),
            # CPU time of this process: on a shared machine, the wall clock also counts other jobs
            "cpu_seconds": round(time.process_time() - c0, 1)}


def domain_consistency(attr: dict, scene: dict, real_images: Sequence[np.ndarray], frames: int = 16, seed: int = 0,
                       views_per_scene: int = 8, input_hw: Sequence[int] = (240, 320)) -> dict[str, Any]:
    """The input domain check (``sim2real.adapt.domain_check``) on the baseline scene vs the footage, and
    whether attribution's grayscale row agrees with it: when sim and real agree on gray vs colour,
    toggling grayscale must OPEN the gap; when they disagree (a domain-check finding), it must CLOSE it."""
    from sim2real.adapt.domain_check import compare_domains

    report = compare_domains(render_images(scene, frames, seed, views_per_scene), list(real_images),
                             input_short=min(input_hw), warn=False)
    row = next((r for r in attr["rows"] if r["group"] == "grayscale"), None)
    agree = report.sim.is_gray == report.real.is_gray
    expected = "opens" if agree else "closes"
    out = {"sim_gray_fraction": report.sim.gray_fraction, "real_gray_fraction": report.real.gray_fraction,
           "findings": [{"key": f.key, "severity": f.severity, "message": f.message} for f in report.findings],
           "grayscale_expected": expected, "grayscale_attribution": row["verdict"] if row else None}
    out["consistent"] = row is not None and row["verdict"] == expected
    return out


def table(attr: dict) -> str:
    """The ranked attribution table as markdown."""
    m = attr["metric"]
    b, n = attr["baseline"], attr["noise"]
    lines = [(f"baseline gap: feat_frechet {b['frechet']:.4g}, feat_mmd {b['mmd']:.4g} "
             f"(seed noise ±{n['frechet']:.3g} / ±{n['mmd']:.3g}; ranked by {m})"), "",
             "| rank | group | change | Δ feat_frechet | Δ feat_mmd | verdict |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(attr["rows"], 1):
        if r["change"] is None:
            lines.append(f"| - | {r['group']} | (already off in this scene) | - | - | already off |")
            continue
        lines.append(f"| {i} | {r['group']} | {r['change']} | {r['delta_frechet']:+.4g} ({r['rel_frechet']:+.1%}) | "
                     f"{r['delta_mmd']:+.4g} ({r['rel_mmd']:+.1%}) | {r['verdict']} |")
    return "\n".join(lines)


def plot(attr: dict, path: Path) -> Path:
    """Horizontal bars: relative change of each distance per group (left = closes the gap), seed noise shaded."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = [r for r in attr["rows"] if r["change"] is not None][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    y = np.arange(len(rows))
    for k, (d, colour) in enumerate((("frechet", "tab:blue"), ("mmd", "tab:orange"))):
        ax.barh(y + (k - 0.5) * 0.38, [100 * r[f"rel_{d}"] for r in rows], height=0.38, color=colour,
                label=f"feat_{d}")
    noise = 100 * attr["noise"][attr["metric"]] / max(attr["baseline"][attr["metric"]], 1e-12)
    ax.axvspan(-noise, noise, color="0.85", zorder=0, label=f"seed noise ({attr['metric']})")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [r["group"] for r in rows])
    ax.set_xlabel("gap change when the group is switched off (%)   ← closes | opens →")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Which randomization opens / closes the sim-to-real feature gap")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
