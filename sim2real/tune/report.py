"""``report.html`` of a tune run: attribution table and plot, search curve, tuned scene diff, held-out
gap and the verify table, one self-contained file (PNGs inlined as base64)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from sim2real.io import atomic_write_text
from sim2real.tune.verify import METRICS

_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child,td.l{text-align:left}.closes{color:#060}.opens{color:#a00}"
        "pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}.note{color:#555;font-size:13px}")


def _f(v: Any, fmt: str = ".4g") -> str:
    return "—" if v is None else (format(v, fmt) if isinstance(v, (int, float)) else html.escape(str(v)))


def _img(path: Path) -> str:
    if not path.is_file():
        return ""
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{b64}' style='max-width:100%'>"


def _attribution(a: dict) -> list[str]:
    b, n = a["baseline"], a["noise"]
    out = ["<h2>Attribution: which randomization opens or closes the gap</h2>",
           (f"<p>Baseline (scene as written, {a['frames']} frames): feat_frechet {_f(b['frechet'])}, feat_mmd "
           f"{_f(b['mmd'])}; seed noise ±{_f(n['frechet'], '.3g')} / ±{_f(n['mmd'], '.3g')} (largest move of "
           f"{len(a['reseeded_baselines'])} re-seeded baselines). Ranked by Δ feat_{a['metric']}; "
           f"took {a['seconds']} s.</p>"),
           ("<table><tr><th>rank</th><th>group</th><th>change</th><th>Δ feat_frechet</th><th>Δ feat_mmd</th>"
           "<th>verdict</th></tr>")]
    for i, r in enumerate(a["rows"], 1):
        if r["change"] is None:
            out.append(f"<tr><td>-</td><td class=l>{r['group']}</td><td class=l>already off in this scene</td>"
                       "<td>-</td><td>-</td><td>already off</td></tr>")
            continue
        out.append(f"<tr><td>{i}</td><td class=l>{html.escape(r['group'])}</td><td class=l>{html.escape(r['change'])}"
                   f"</td><td>{r['delta_frechet']:+.4g} ({r['rel_frechet']:+.1%})</td><td>{r['delta_mmd']:+.4g} "
                   f"({r['rel_mmd']:+.1%})</td><td class='{r['verdict'].split()[0]}'>{r['verdict']}</td></tr>")
    out.append("</table><p class=note>closes: switching the group off brings sim features closer to the real "
               "footage (the group, as randomized, does not look like this camera); opens: the group is needed.</p>")
    return out


def _domain(d: dict) -> list[str]:
    items = "".join(f"<li>{html.escape(f['key'])} ({f['severity']}): {html.escape(f['message'])}</li>"
                    for f in d["findings"]) or "<li>no finding</li>"
    return ["<h3>Consistency with the input domain check</h3>",
            (f"<p>gray fraction sim {d['sim_gray_fraction']:.2f}, real {d['real_gray_fraction']:.2f}; toggling "
            f"grayscale should <b>{d['grayscale_expected']}</b> the gap, attribution says "
            f"<b>{html.escape(str(d['grayscale_attribution']))}</b>: "
            f"{'consistent' if d['consistent'] else 'NOT consistent'}.</p><ul>{items}</ul>")]


def _search(s: dict, h: dict | None, diff: str) -> list[str]:
    best = s["best"]
    rows = "".join(f"<tr><td class=l>{html.escape(k)}</td><td>{_f(s['trials'][0]['params'].get(k))}</td>"
                   f"<td>{_f(v)}</td></tr>" for k, v in best["params"].items())
    out = ["<h2>Search</h2>",
           (f"<p>{len(s['trials'])} completed trials of {s['frames']} frames (TPE, seed {s['seed']}), objective "
           f"{html.escape(s.get('objective_name', 'feat_' + s['metric']))}: hand-written scene {_f(s['trials'][0]['value'])}, best {_f(best['value'])} "
           f"(trial {best['trial']}); {s['seconds']} s.</p>"),
           "<table><tr><th>parameter</th><th>hand-written</th><th>tuned</th></tr>" + rows + "</table>"]
    if h:
        out.append(f"<h3>Held-out render ({h['frames']} frames, seed {h['seed']}, not seen by the search)</h3>"
                   "<table><tr><th>distance</th><th>original</th><th>tuned</th><th>reduction</th></tr>"
                   + "".join(f"<tr><td class=l>feat_{d}</td><td>{_f(h['original'][d])}</td><td>{_f(h['tuned'][d])}"
                             f"</td><td>{h['reduction'][d]:+.1%}</td></tr>" for d in ("frechet", "mmd")) + "</table>")
        if "frechet_change" in h:   # holdout.json written before the split had none
            c = h["frechet_change"]
            out.append(f"<p>Of the feat_frechet change: {_f(c['content'])} from the mean offset (content closer), "
                       f"{_f(c['narrowing'])} from the sim set's spread (narrower randomization)."
                       + (" <b>Mostly narrowing</b>: the scene got closer to the clip mainly by randomizing less, which "
                          "can cost robustness; check the verify table before using it." if c["mostly_narrowing"]
                          else "") + "</p>")
    out.append(f"<h3>Tuned scene diff</h3><pre>{html.escape(diff)}</pre>")
    return out


def _verify(v: dict) -> list[str]:
    sets = list(v["original"]["real"])
    head = "".join(f"<th>{s}: {k}</th>" for s in sets for k, _ in METRICS)

    def cell(name: str, s: str, k: str) -> str:
        sp = (v[name].get("spread") or {}).get(s, {}).get(k)
        return f"<td>{_f(v[name]['real'][s].get(k))}" + (f" ({_f(sp[0])}-{_f(sp[1])})" if sp else "") + "</td>"

    rows = "".join(f"<tr><td class=l>{name}</td>" + "".join(cell(name, s, k) for s in sets for k, _ in METRICS)
                   + "</tr>" for name in ("original", "tuned"))
    b = v["budget"]
    seeds = b.get("seeds", [0])
    return ["<h2>Verify: source-only training, real labelled frames</h2>",
            (f"<p>Same budget for both: {b['frames']} frames (seed {b['data_seed']}), {b['epochs']} epochs, "
             f"training seeds {seeds}: mean over the seeds (min-max).</p>"),
            f"<table><tr><th>scene</th>{head}</tr>{rows}</table>",
            f"<p><b>{html.escape(v['verdict']['text'])}</b></p>"]


def write_report(out: Path, result: dict) -> Path:
    parts = [(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sim2real tune</title><style>{_CSS}</style>"
             f"</head><body><h1>sim2real tune: {html.escape(result['scene_file'])}</h1>"),
             (f"<p>real footage: {html.escape(result['real']['source'])} ({result['real']['frames']} frames, "
             "unlabelled)</p>")]
    if result.get("attribution"):
        parts += _attribution(result["attribution"])
        if result.get("domain_check"):
            parts += _domain(result["domain_check"])
        parts.append(_img(out / "attribution.png"))
    if result.get("search"):
        diff_path = Path(result["tuned_diff"])
        parts += _search(result["search"], result.get("holdout"), diff_path.read_text() if diff_path.is_file() else "")
        parts.append(_img(out / "search.png"))
    if result.get("verify"):
        parts += _verify(result["verify"])
    parts.append("</body></html>")
    return atomic_write_text(out / "report.html", "\n".join(parts))
