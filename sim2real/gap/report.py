"""A self-contained local report of a run: ``<run_dir>/report.html`` + ``<run_dir>/report/*.png``.

Built from the run folder's ``metrics.jsonl`` / ``summary.json`` and, when given, feature arrays,
confusion matrices, localization errors, frames with predictions (any number of instances), a
per-class AP table, precision-recall curves per class and the reliability diagram of the detection
scores. The HTML embeds every plot
as base64 PNG, so the single file can be mailed or attached to an issue; the PNG files are also
kept and handed to the W&B sink through ``logger.log_media``.

Example::

    write_report(run_dir, method="coral",
                 features={"before": (sim_f0, real_f0), "after": (sim_f1, real_f1)},
                 confusion={"sim": sim_eval["confusion"], "real": real_eval["confusion"]},
                 classes=model.classes,
                 loc_errors={"sim": {"center_err_px": e_sim}, "real": {"center_err_px": e_real}},
                 frames={"sim": [(img, pred, label), ...], "real": [...]},
                 logger=logger)
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sim2real.gap.naming import finite_number
from sim2real.io import atomic_write_bytes, atomic_write_text, read_jsonl

_BOOKKEEPING = ("step", "epoch", "time", "split", "n")
_DOMAIN_COLORS = {"sim": "tab:blue", "real": "tab:orange", "gap": "tab:red"}


@dataclass
class Report:
    html_path: Path
    images: dict[str, Path] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the summary table


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fmt(v: Any) -> str:
    num = finite_number(v)
    if num is None:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        return html.escape(str(v))
    return f"{num:.4g}"


def _save(fig, path: Path) -> bytes:
    buf = io.BytesIO()
    # No "Software" stamp: same inputs -> same bytes, whatever matplotlib build wrote it.
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return data


# --------------------------------------------------------------------------- table


def _load_run(run_dir: Path) -> tuple[list[dict], dict]:
    metrics_path, summary_path = run_dir / "metrics.jsonl", run_dir / "summary.json"
    records = read_jsonl(metrics_path) if metrics_path.is_file() else []
    summary: dict = {}
    if summary_path.is_file():
        import json

        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{summary_path}: not valid JSON ({e})") from None
        if not isinstance(summary, dict):
            raise ValueError(f"{summary_path}: expected a JSON object of name: value")
    return records, summary


def _latest_values(records: list[dict], summary: dict) -> dict[str, Any]:
    """Last logged value of every key, overridden by the summary (the run's final word)."""
    latest: dict[str, Any] = {}
    for rec in records:
        for k, v in rec.items():
            if k not in _BOOKKEEPING and v is not None:
                latest[k] = v
    latest.update({k: v for k, v in summary.items() if v is not None})
    return latest


def _per_class_key(name: str) -> bool:
    """``ap/<class>``, ``ap50/<class>`` (per-class metrics of ``sim2real.eval.detection``) and
    ``pose_center_err_cm_median/<class>`` (``sim2real.eval.pose_metrics``)."""
    head, _, rest = name.partition("/")
    return bool(rest) and head in ("ap", "ap50", "ap75", "ar", "pose_center_err_cm_median")


def _table_order(name: str) -> tuple[int, str]:
    """Main table order: the detection metrics (alphabetical, as before), then the pose metrics
    (``pose_*``, ``corner_err_px_median``) in ``METRIC_NAMES`` order, grouped."""
    from sim2real.eval.metrics import POSE_METRIC_NAMES

    if name in POSE_METRIC_NAMES:
        return (1, f"{POSE_METRIC_NAMES.index(name):03d}")
    return (0, name)


def _table_rows(values: dict[str, Any], feature_gaps: dict[str, float]) -> list[dict[str, Any]]:
    from sim2real.gap.naming import FEATURE_PREFIX, gap_metrics

    sim = {k[4:]: v for k, v in values.items() if k.startswith("sim/")}
    real = {k[5:]: v for k, v in values.items() if k.startswith("real/")}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown directions just get no computed gap here
        computed = gap_metrics(sim, real)
    rows = []
    for name in sorted(set(sim) | set(real), key=_table_order):
        if _per_class_key(name):  # ap50/<class>, pose_center_err_cm_median/<class>: the per-class table's
            continue
        if finite_number(sim.get(name)) is None and finite_number(real.get(name)) is None:
            continue
        gap = values.get(f"gap/{name}", computed.get(f"gap/{name}"))
        rows.append({"metric": name, "sim": sim.get(name), "real": real.get(name), "gap": gap})
    feats = {k[len(FEATURE_PREFIX):]: v for k, v in values.items() if k.startswith(FEATURE_PREFIX)}
    feats.update(feature_gaps)
    for name in sorted(feats):
        if "_sigma" not in name:
            rows.append({"metric": f"feature {name}", "sim": None, "real": None, "gap": feats[name]})
    return rows


# --------------------------------------------------------------------------- plots


def _series(records: list[dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{base metric: {variant: [(x, y), ...]}}``, x = epoch (or step)."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for rec in records:
        x = finite_number(rec.get("epoch", rec.get("step")))
        if x is None:
            continue
        split = rec.get("split") if isinstance(rec.get("split"), str) else None
        for key, value in rec.items():
            y = finite_number(value)
            if key in _BOOKKEEPING or y is None:
                continue
            head, _, rest = key.partition("/")
            if rest and head in ("sim", "real", "gap", "train", "val", "test"):
                variant, base = head, rest
            else:
                variant, base = split or "value", key
            out.setdefault(base, {}).setdefault(variant, []).append((x, y))
    return out


def _panel_priority(name: str) -> tuple[int, str]:
    # Task metrics (which carry sim/real/gap curves) first, then losses, then bookkeeping such as
    # timings, so a crowded run still shows what matters within max_panels.
    lname = name.lower()
    if _per_class_key(lname):
        return (4, name)
    if lname in ("ap", "ap50", "ap75", "ar") or any(t in lname for t in ("acc", "center_err", "iou", "pck", "feat_",
                                                                          "pose_adds")):
        return (0, name)
    if "loss" in lname:
        return (1, name)
    if any(t in lname for t in ("seconds", "time", "lr")):
        return (3, name)
    return (2, name)


def _plot_curves(records: list[dict], path: Path, max_panels: int = 12) -> bytes | None:
    series = _series(records)
    if not series:
        return None
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    names = sorted(series, key=_panel_priority)[:max_panels]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax, name in zip(axes.flat, names):
        for variant, points in sorted(series[name].items()):
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", ms=3, label=variant, color=_DOMAIN_COLORS.get(variant),
                    linestyle="--" if variant == "gap" else "-")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch" if any("epoch" in r for r in records) else "step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("metrics over training")
    return _save(fig, path)


def _embed_2d(feats: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    from sklearn.decomposition import PCA

    n = len(feats)
    feats = feats - feats.mean(0)
    if n < 30 or feats.shape[1] < 2:
        k = min(2, n, feats.shape[1])
        out = PCA(n_components=k, random_state=seed).fit_transform(feats) if k >= 1 else np.zeros((n, 1))
        if out.shape[1] < 2:
            out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
        return out, "PCA"
    from sklearn.manifold import TSNE

    if feats.shape[1] > 50:  # the usual PCA pre-reduction: faster and denoised t-SNE
        feats = PCA(n_components=min(50, n), random_state=seed).fit_transform(feats)
    perplexity = float(min(30.0, (n - 1) / 3.0))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500)
    return tsne.fit_transform(feats), "t-SNE"


def _plot_embedding(features: Mapping[str, tuple[Any, Any]], path: Path, seed: int, max_points: int) -> bytes:
    from sim2real.gap.distances import as_features, subsample

    plt = _plt()
    fig, axes = plt.subplots(1, len(features), figsize=(5 * len(features), 4.5), squeeze=False, layout="constrained")
    for ax, (stage, (sim, real)) in zip(axes.flat, features.items()):
        sim = subsample(as_features(sim, f"features[{stage!r}] sim"), max_points, seed)
        real = subsample(as_features(real, f"features[{stage!r}] real"), max_points, seed + 1)
        if sim.shape[1] != real.shape[1]:
            raise ValueError(f"features[{stage!r}]: sim and real widths differ ({sim.shape[1]} vs {real.shape[1]})")
        xy, how = _embed_2d(np.concatenate([sim, real]), seed)
        ax.scatter(*xy[: len(sim)].T, s=8, alpha=0.6, label=f"sim ({len(sim)})", color=_DOMAIN_COLORS["sim"])
        ax.scatter(*xy[len(sim):].T, s=8, alpha=0.6, label=f"real ({len(real)})", color=_DOMAIN_COLORS["real"])
        ax.set_title(f"{stage}: {how} of features", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_confusion(confusion: Mapping[str, Any], classes: Sequence[str] | None, path: Path) -> bytes:
    plt = _plt()
    mats = {}
    for domain, cm in confusion.items():
        cm = np.asarray(cm, dtype=np.float64)
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
            raise ValueError(f"confusion[{domain!r}]: expected a square (C, C) matrix (rows = true class), "
                             f"got shape {cm.shape}")
        mats[domain] = cm
    fig, axes = plt.subplots(1, len(mats), figsize=(4.2 * len(mats), 3.8), squeeze=False, layout="constrained")
    for ax, (domain, cm) in zip(axes.flat, mats.items()):
        c = len(cm)
        names = list(classes) if classes and len(classes) == c else [str(i) for i in range(c)]
        rows = cm.sum(1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(c), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(c), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{domain} confusion", fontsize=10)
    return _save(fig, path)


def _plot_errors(loc_errors: Mapping[str, Any], path: Path) -> bytes:
    plt = _plt()
    by_name: dict[str, dict[str, np.ndarray]] = {}
    for domain, errs in loc_errors.items():
        if not isinstance(errs, Mapping):
            errs = {"error": errs}
        for name, values in errs.items():
            arr = np.asarray(values, dtype=np.float64).ravel()
            by_name.setdefault(name, {})[domain] = arr[np.isfinite(arr)]
    fig, axes = plt.subplots(1, len(by_name), figsize=(4.5 * len(by_name), 3.4), squeeze=False, layout="constrained")
    for ax, (name, domains) in zip(axes.flat, by_name.items()):
        allv = np.concatenate([v for v in domains.values()] + [np.zeros(1)])
        bins = np.linspace(0.0, float(np.percentile(allv, 99)) or 1.0, 25)
        for domain, values in domains.items():
            color = _DOMAIN_COLORS.get(domain)
            ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.5, color=color,
                    label=f"{domain} (median {np.median(values):.3g})" if values.size else domain)
            if values.size:
                ax.axvline(np.median(values), color=color, linestyle="--")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel("frames")
        ax.legend(fontsize=8)
    return _save(fig, path)


def _as_image(img: Any) -> np.ndarray:
    if isinstance(img, (str, Path)):
        from PIL import Image

        if not Path(img).is_file():
            raise FileNotFoundError(f"report frame image not found: {img}")
        with Image.open(img) as im:
            img = np.asarray(im)
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"report frame: expected an HxW or HxWxC image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
        arr = (255.0 * arr / hi).clip(0, 255).astype(np.uint8)
    return arr


def _keypoints(kp: Any) -> np.ndarray:
    arr = np.asarray(kp, dtype=np.float64)
    if arr.ndim == 1:  # COCO flat [u, v, vis, ...]
        arr = arr.reshape(-1, 3)
    return arr


def _draw_one(ax, pred: Mapping | None, label: Mapping | None, tag: bool = False) -> None:
    """One instance: ``label`` a COCO-style annotation (``bbox`` xywh, ``center_px``, ``keypoints``)
    or a ground-truth record (``box`` xyxy, ``center``, ``keypoints`` [[u, v, vis]]), green;
    ``pred`` a predict-record instance (``box`` xyxy, ``center``, ``keypoints``, ``class``, ``score``), red.
    ``tag``: write class (and score) at the box's corner."""
    from matplotlib.patches import Rectangle

    if label:
        ignored = bool(label.get("ignore"))
        style = dict(fill=False, edgecolor="lime", lw=1.2, linestyle=":" if ignored else "-")
        box = None
        if "bbox" in label:  # COCO [x, y, w, h]
            x, y, w, h = label["bbox"]
            box = (x, y, x + w, y + h)
        elif "box" in label:
            box = tuple(label["box"])
        if box is not None:
            ax.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1], **style))
        center = label.get("center_px", label.get("center"))
        if center is not None:
            ax.plot(*center, "+", color="lime", ms=9, mew=1.5)
        if label.get("keypoints") is not None and len(label["keypoints"]):
            kp = _keypoints(label["keypoints"])
            vis = kp[:, 2] > 0 if kp.shape[1] > 2 else np.ones(len(kp), bool)
            ax.scatter(kp[vis, 0], kp[vis, 1], s=9, facecolors="none", edgecolors="lime")
        if tag and box is not None and (label.get("class_name") or label.get("class")):
            ax.text(box[0], box[3], str(label.get("class_name", label.get("class"))), color="lime", fontsize=6,
                    va="top", ha="left")
    if pred:
        if "box" in pred:  # xyxy
            x0, y0, x1, y1 = pred["box"]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", lw=1.2))
            if tag and "class" in pred:
                score = finite_number(pred.get("score"))
                ax.text(x0, y0, f"{pred['class']}" + (f" {score:.2f}" if score is not None else ""), color="white",
                        fontsize=6, va="bottom", ha="left", bbox=dict(facecolor="red", alpha=0.6, pad=0.5, lw=0))
        if "center" in pred:
            ax.plot(*pred["center"], "x", color="red", ms=8, mew=1.5)
        if pred.get("keypoints") is not None and len(pred["keypoints"]):
            kp = _keypoints(pred["keypoints"])
            ax.scatter(kp[:, 0], kp[:, 1], s=7, color="red")


def _draw(ax, pred: Mapping | None, label: Mapping | None) -> None:
    """Every instance of a frame: ``{"instances": [...]}`` dicts (every predicted / labelled object,
    tagged with class and score) or one single-object dict each."""
    multi = bool((pred and "instances" in pred) or (label and "instances" in label))
    labels = (label or {}).get("instances", []) if label and "instances" in label else ([label] if label else [])
    preds = (pred or {}).get("instances", []) if pred and "instances" in pred else ([pred] if pred else [])
    for lab in labels:
        _draw_one(ax, None, lab, tag=multi)
    for p in preds:
        _draw_one(ax, p, None, tag=multi)


def _frame_title(pred: Mapping | None, label: Mapping | None) -> str:
    if (pred and "instances" in pred) or (label and "instances" in label):
        n_pred = len((pred or {}).get("instances", []))
        n_true = len((label or {}).get("instances", []))
        return f"{n_pred} pred | {n_true} true"
    parts = []
    if pred and "class" in pred:
        score = finite_number(pred.get("score"))
        parts.append(f"pred {pred['class']}" + (f" {score:.2f}" if score is not None else ""))
    if label and ("class_name" in label or "class" in label):
        parts.append(f"true {label.get('class_name', label.get('class'))}")
    return " | ".join(parts)


def _plot_frames(frames: Mapping[str, Sequence[tuple]], path: Path, max_per_domain: int) -> bytes:
    plt = _plt()
    domains = {d: list(f)[:max_per_domain] for d, f in frames.items() if f}
    cols = max(len(f) for f in domains.values())
    fig, axes = plt.subplots(len(domains), cols, figsize=(3.2 * cols, 2.8 * len(domains)), squeeze=False,
                             layout="constrained")
    for r, (domain, items) in enumerate(domains.items()):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(items):
                continue
            item = tuple(items[c])
            if not 1 <= len(item) <= 3:
                raise ValueError(f"frames[{domain!r}][{c}]: expected (image, pred dict, label dict), "
                                 f"got {len(item)} items")
            img, pred, label = (item + (None, None))[:3]
            arr = _as_image(img)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)
            _draw(ax, pred, label)
            ax.set_xlim(-0.5, arr.shape[1] - 0.5)
            ax.set_ylim(arr.shape[0] - 0.5, -0.5)
            ax.set_title(f"{domain} #{c}  {_frame_title(pred, label)}", fontsize=8)
    fig.suptitle("predictions (red: class score, from the model's score threshold) vs labels (green; dotted = "
                 "ignored)", fontsize=10)
    return _save(fig, path)


def _plot_pr(curves: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], path: Path) -> bytes:
    """One panel per domain: precision vs recall at IoU 0.5, a line per class (``detection.pr_curves``)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False, layout="constrained")
    for ax, (domain, per_class) in zip(axes.flat, curves.items()):
        drawn = 0
        for name, c in per_class.items():
            r, p = np.asarray(c.get("recall", []), np.float64), np.asarray(c.get("precision", []), np.float64)
            if not r.size:
                continue
            p = np.where(p < 0, np.nan, p)  # COCOeval: -1 = undefined (recall not reached)
            ax.plot(r, p, label=name, lw=1.4)
            drawn += 1
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{domain}: precision-recall at IoU 0.5", fontsize=10)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no labelled instance", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def _plot_reliability(tables: Mapping[str, Mapping[str, Any]], path: Path) -> bytes:
    """One panel per domain: accuracy (fraction of true positives) vs mean score per score bin
    (``detection.reliability``), the diagonal = perfect calibration, with the ECE in the title."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(4.4 * len(tables), 3.8), squeeze=False, layout="constrained")
    for ax, (domain, t) in zip(axes.flat, tables.items()):
        edges = np.asarray(t["bin_edges"], np.float64)
        acc = np.asarray(t["accuracy"], np.float64)
        conf = np.asarray(t["confidence"], np.float64)
        count = np.asarray(t["count"], np.float64)
        width = np.diff(edges)
        ax.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", edgecolor="black", alpha=0.7,
               color=_DOMAIN_COLORS.get(domain, "tab:blue"), label="fraction correct")
        used = count > 0
        ax.plot(conf[used], acc[used], "o", color="black", ms=3, label="mean score")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
        for x, w, n in zip(edges[:-1], width, count):
            if n:
                ax.text(x + w / 2, 0.02, f"{int(n)}", ha="center", va="bottom", fontsize=6, rotation=90)
        ece = finite_number(t.get("ece"))
        ax.set_title(f"{domain}: reliability of detection scores" + (f" (ECE {ece:.3f})" if ece is not None else ""),
                     fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("detection score")
        ax.set_ylabel("fraction true positive (IoU 0.5)")
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


# --------------------------------------------------------------------------- html


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f2f2f2}td:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}
.note{color:#666;font-size:0.9em}td.nl{color:#999;text-align:center}"""


def _per_class_html(per_class: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The per-class table: a row per class, AP50 and AP per domain (and the median pose centre error
    in cm when a domain has one); a class a domain's labels do not define reads "not labelled"."""
    domains = list(per_class)
    classes: list[str] = []
    for d in domains:
        classes += [c for c in per_class[d] if c not in classes]
    cols = [("ap50", "AP50"), ("ap", "AP")]
    pose_key = "pose_center_err_cm_median"
    if any(pose_key in (v or {}) for d in domains for v in per_class[d].values()):
        cols.append((pose_key, "pose centre err cm"))
    head = "".join(f"<th>{html.escape(d)} {m}</th>" for d in domains for _, m in cols)
    out = ["<h2>Per class</h2>", f"<table class='per-class'><tr><th>class</th>{head}</tr>"]
    for c in classes:
        cells = []
        for d in domains:
            v = per_class[d].get(c)
            if v is None:
                cells.append(f"<td colspan='{len(cols)}' class='nl'>not labelled</td>")
            else:
                cells.append("".join(f"<td>{_fmt(v.get(k))}</td>" for k, _ in cols))
        out.append(f"<tr><td>{html.escape(c)}</td>{''.join(cells)}</tr>")
    note = ("COCO box AP per class: AP50 at IoU 0.5, AP averaged over IoU 0.5:0.95; — = no labelled instance of "
            "the class in the scored images.")
    if len(cols) > 2:
        note += (" Pose centre err: median distance (cm) of the PnP pose's centre to the labelled 3D centre over the "
                 "matched instances with a labelled pose (— = none).")
    out.append(f"</table><p class='note'>{note}</p>")
    return out


def _html(title: str, method: str, rows: list[dict], images: dict[str, bytes],
          notes: Mapping[str, Sequence[str]] | None = None,
          per_class: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    table = ["<table><tr><th>metric</th><th>sim</th><th>real</th><th>gap (+ = real worse)</th></tr>"]
    for row in rows:
        table.append(f"<tr><td>{html.escape(row['metric'])}</td><td>{_fmt(row['sim'])}</td>"
                     f"<td>{_fmt(row['real'])}</td><td>{_fmt(row['gap'])}</td></tr>")
    table.append("</table>")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p>method: <b>{html.escape(method)}</b></p>", "<h2>Sim vs real</h2>", *table,
             "<p class='note'>gap/&lt;metric&gt; = sim − real for accuracy/IoU/PCK and pose success rates "
             "(pose_adds_0.1d, pose_ok_fraction), real − sim for errors and losses; feature rows are distances "
             "between sim and real embeddings (0 = same). pose_* rows: 6D pose (PnP from the predicted corners) "
             "of the matched instances with a labelled pose, centre and ADD-S errors in cm, rotation error in "
             "degrees modulo the object's symmetry; corner_err_px_median: symmetric corner error in pixels.</p>"]
    if per_class:
        parts += _per_class_html(per_class)
    for heading, lines in (notes or {}).items():
        parts.append(f"<h2>{html.escape(heading)}</h2><ul>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")
    for name, data in images.items():
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2>"
                     f"<img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, *, title: str | None = None, method: str | None = None,
                 features: Mapping[str, tuple[Any, Any]] | None = None,
                 feature_gaps: Mapping[str, float] | None = None,
                 confusion: Mapping[str, Any] | None = None, classes: Sequence[str] | None = None,
                 loc_errors: Mapping[str, Any] | None = None,
                 frames: Mapping[str, Sequence[tuple]] | None = None,
                 logger: Any = None, seed: int = 0, max_points: int = 300, max_frames: int = 6,
                 compute_feature_gaps: bool = True,
                 notes: Mapping[str, Sequence[str]] | None = None,
                 per_class: Mapping[str, Mapping[str, Any]] | None = None,
                 pr_curves: Mapping[str, Mapping[str, Any]] | None = None,
                 reliability: Mapping[str, Mapping[str, Any]] | None = None) -> Report:
    """Write ``<run_dir>/report.html`` and ``<run_dir>/report/*.png``; returns what was written.

    - ``features``: ``{"before": (sim (N, D), real (M, D)), "after": (...)}`` (any stage names;
      one entry is fine): a 2-D t-SNE (PCA when fewer than 30 points) per stage, and, unless
      ``feature_gaps`` or ``compute_feature_gaps=False``, MMD / CORAL / Fréchet rows per stage
      (on up to ``max_points`` samples per domain).
    - ``confusion``: ``{"sim": (C, C), "real": (C, C)}`` counts, rows = true class; ``classes``: names.
    - ``loc_errors``: ``{"sim": {"center_err_px": (N,), ...}, "real": {...}}`` (or one array per domain).
    - ``frames``: ``{"sim": [(image, pred, label), ...], "real": [...]}``; ``image`` an array or a
      file path, ``pred`` a predict record (``box`` xyxy, ``center``, ``keypoints``, ``class``,
      ``score``), ``label`` a COCO annotation (``bbox`` xywh, ``center_px``, ``keypoints``); both
      in the image's pixels, either may be None.
    - ``notes``: ``{heading: [line, ...]}`` plain-text sections shown after the table.
    - ``per_class``: ``{"sim": {class: {"ap": v, "ap50": v[, "pose_center_err_cm_median": v]} | None},
      "real": ...}``: the per-class table (None = the domain's labels do not define the class: "not labelled").
    - ``pr_curves``: ``{"sim": detection.pr_curves(...), ...}``: precision-recall per class at IoU 0.5.
    - ``reliability``: ``{"sim": detection.reliability(...) + {"ece": v}, ...}``: reliability diagram.
    - ``logger``: a RunLogger; every PNG is sent with ``log_media("report/<name>", png)`` and the HTML
      with kind ``"html"``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    records, summary = _load_run(run_dir)
    values = _latest_values(records, summary)
    method = method or (str(summary["method"]) if "method" in summary else None) or _config_method(run_dir) or "—"

    gaps = dict(feature_gaps or {})
    if features and not feature_gaps and compute_feature_gaps:
        from sim2real.gap.distances import feature_distances

        for stage, (sim, real) in features.items():
            dists = feature_distances(sim, real, metrics=("mmd", "coral", "frechet"), max_samples=max_points,
                                      seed=seed)
            suffix = f" ({stage})" if len(features) > 1 else ""
            gaps.update({f"{name}{suffix}": value for name, value in dists.items()})
    rows = _table_rows(values, gaps)

    out_dir = run_dir / "report"
    images: dict[str, bytes] = {}
    paths: dict[str, Path] = {}

    def add(name: str, data: bytes | None) -> None:
        if data is not None:
            images[name] = data
            paths[name] = out_dir / f"{name}.png"

    add("metric_curves", _plot_curves(records, out_dir / "metric_curves.png"))
    if features:
        add("feature_embedding", _plot_embedding(features, out_dir / "feature_embedding.png", seed, max_points))
    if confusion:
        add("confusion", _plot_confusion(confusion, classes, out_dir / "confusion.png"))
    if loc_errors:
        add("localization_errors", _plot_errors(loc_errors, out_dir / "localization_errors.png"))
    if pr_curves:
        add("precision_recall", _plot_pr(pr_curves, out_dir / "precision_recall.png"))
    if reliability:
        add("reliability", _plot_reliability(reliability, out_dir / "reliability.png"))
    if frames and any(frames.values()):
        add("frames", _plot_frames(frames, out_dir / "frames.png", max_frames))

    html_path = atomic_write_text(run_dir / "report.html", _html(title or f"sim2real report: {run_dir.name}",
                                                                 method, rows, images, notes, per_class))
    if logger is not None:
        for name, path in paths.items():
            logger.log_media(f"report/{name}", path, kind="image")
        logger.log_media("report/html", html_path, kind="html")
    return Report(html_path, paths, rows)


def _config_method(run_dir: Path) -> str | None:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    if isinstance(cfg, dict):
        for key in ("method", "adapt"):
            value = cfg.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, dict) and isinstance(value.get("method"), str):
                return value["method"]
    return None
