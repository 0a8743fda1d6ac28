"""Pictures and pages of label suggestions: the contact sheet, the label curve plot, a small report.html.

``contact_sheet``: the suggested frames in rank order as one PNG grid, each tile stamped with its
rank and frame. ``plot_label_curve``: real test error against k for suggested vs random frames
(mean, min-max band over seeds). ``write_html``: one self-contained page (tables + base64 PNGs),
so it can be mailed or attached to an issue like the run report.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim2real.data.images import to_rgb
from sim2real.io import atomic_write_bytes, atomic_write_text


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str], cols: int = 5,
                  tile_w: int = 240) -> np.ndarray:
    """``images`` (package layout: RGB or gray) as a grid of ``tile_w``-wide tiles with ``captions``
    stamped on a dark band at the top of each; RGB uint8."""
    if not images:
        raise ValueError("contact_sheet: no images")
    tiles = []
    for img, cap in zip(images, captions):
        rgb = to_rgb(img)
        h = max(1, round(rgb.shape[0] * tile_w / rgb.shape[1]))
        t = cv2.resize(rgb, (tile_w, h), interpolation=cv2.INTER_AREA)
        cv2.rectangle(t, (0, 0), (tile_w - 1, 22), (0, 0, 0), thickness=-1)
        cv2.putText(t, cap, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(t)
    th = max(t.shape[0] for t in tiles)
    cols = max(1, min(cols, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.full((rows * (th + 4) + 4, cols * (tile_w + 4) + 4, 3), 255, np.uint8)
    for n, t in enumerate(tiles):
        r, c = divmod(n, cols)
        y, x = 4 + r * (th + 4), 4 + c * (tile_w + 4)
        sheet[y:y + t.shape[0], x:x + tile_w] = t
    return sheet


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode {path} as PNG")
    return atomic_write_bytes(path, buf.tobytes())


def plot_label_curve(table: Sequence[Mapping[str, Any]], metrics: Sequence[tuple[str, str]],
                     path: str | Path) -> Path:
    """One panel per ``(metric key, axis label)``: mean over seeds against k per arm, with the
    min-max band. ``table`` rows: ``{"arm", "k", "<metric>_mean", "<metric>_min", "<metric>_max"}``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    arms = list(dict.fromkeys(r["arm"] for r in table))
    for ax, (key, label) in zip(axes[0], metrics):
        for arm in arms:
            rows = sorted((r for r in table if r["arm"] == arm), key=lambda r: r["k"])
            ks = [r["k"] for r in rows]
            mean = [_num(r.get(f"{key}_mean")) for r in rows]
            (line,) = ax.plot(ks, mean, marker="o", label=arm)
            lo, hi = [_num(r.get(f"{key}_min")) for r in rows], [_num(r.get(f"{key}_max")) for r in rows]
            if any(a != b for a, b in zip(lo, hi) if not (math.isnan(a) or math.isnan(b))):
                ax.fill_between(ks, lo, hi, alpha=0.2, color=line.get_color())  # min-max over seeds
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["k"] for r in table}))
        ax.set_xticklabels([str(k) for k in sorted({r["k"] for r in table})])
        ax.set_xlabel("k (labelled real frames)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    return html.escape("—" if v is None else str(v))


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(path: str | Path, title: str, sections: Sequence[tuple[str, str]],
               images: Mapping[str, str | Path] | None = None) -> Path:
    """``sections``: ``(heading, html body)``; ``images``: caption -> PNG file, embedded (base64)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             ("<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
              "td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px;text-align:right}"
              "img{max-width:100%}</style></head><body>"), f"<h1>{html.escape(title)}</h1>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    for caption, p in (images or {}).items():
        data = base64.b64encode(Path(p).read_bytes()).decode()
        parts.append(f"<h2>{html.escape(caption)}</h2><img src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))
