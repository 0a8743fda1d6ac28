"""``sim2real suggest-labels``: config, which frames are candidates, and the run folder it writes.

Candidates (never an evaluation-only frame):

- no ``source``: the labelling pool of the real labels' splits, made with the same keys and
  defaults as ``adapt`` (``real_labels``, ``n_val``, ``n_test``, ``split_gap``, ``split_seed``; ViSP
  cube: frames 0-45), so the list fits ``adapt kshot_list=...`` with the same settings;
- ``source`` = a frame folder or video (``frames`` = ``[start, stop)``, ``stride``, ``max_frames``).
  The footage readers refuse evaluation-only frames (ViSP cube 100-217) before reading anything;
  with real labels named (``real_labels``), files that are labelled val / test / guard frames of
  their splits are dropped before they are read, and counted.

Outputs in ``run_dir``: ``suggestions.json`` + ``suggestions.csv`` (the ranked list, docs/contracts.md
"Label suggestions"), ``contact_sheet.png`` (the top ``sheet`` frames with their ranks),
``report.html``, ``config.yaml``, ``run_info.json``, ``metrics.jsonl`` / ``summary.json`` and W&B
(offline by default) with the table and the contact sheet.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from sim2real.adapt.label_list import COLUMNS, FORMAT
from sim2real.adapt.label_report import contact_sheet, html_table, save_png, write_html
from sim2real.adapt.suggest import (
    FEATURES,
    START_RULES,
    STRATEGIES,
    k_center_greedy,
    score_frames,
    typiclust,
)
from sim2real.config import ConfigError, choice, rng, to_dict
from sim2real.data.images import ImageReadError, load_image
from sim2real.data.real import CocoSet, RealDataError, load_coco
from sim2real.data.real_footage import FrameFolderFootage, open_footage
from sim2real.data.real_visp import (
    VISP_CUBE_SPLIT_DEFAULTS,
    load_visp_cube_dev,
    visp_cube_labels_path,
)
from sim2real.data.splits import Splits, load_splits, make_splits
from sim2real.engine import check_fresh_run_dir, open_run
from sim2real.eval.model import load_model
from sim2real.io import atomic_write_json, atomic_write_text
from sim2real.tracking import TrackingConfig

log = logging.getLogger(__name__)

AUTO, VISP = "auto", "visp"


@dataclass
class SuggestConfig:
    checkpoint: Optional[str] = None          # the sim-trained (or adapted) model whose features rank frames
    # --- candidates: footage, or (source null) the real labels' labelling pool
    source: Optional[str] = None              # video file or frame folder; null = the labels' pool split
    frames: Optional[list[int]] = None        # [start, stop) frame range of `source`
    stride: int = field(default=1, metadata=rng(1, None))
    max_frames: Optional[int] = field(default=300, metadata=rng(1, None))
    # --- real labels and their splits (same keys and defaults as adapt): what is evaluation-only
    # auto = the ViSP cube dev labels when source is null (the demo), none with your own source
    real_labels: Optional[str] = AUTO
    real_image_root: Optional[str] = None
    splits_file: Optional[str] = None
    n_val: int = field(default=20, metadata=rng(0, None))
    n_test: int = field(default=30, metadata=rng(0, None))
    split_gap: int = field(default=2, metadata=rng(0, None))
    split_seed: int = 0
    # --- ranking
    # kcenter: k-centre greedy + uncertainty over every frame; typiclust: the first `budget` frames are
    # k-means(budget) + the most typical frame of each cluster (low budgets), the rest k-centre greedy
    strategy: str = field(default="kcenter", metadata=choice(*STRATEGIES))
    features: str = field(default="object", metadata=choice(*FEATURES))   # object: pooled over own detections
    budget: Optional[int] = field(default=None, metadata=rng(1, None))    # typiclust k (null = top, else 10)
    knn: int = field(default=20, metadata=rng(1, None))                   # typicality neighbours (in a cluster)
    uncertainty_weight: float = field(default=0.5, metadata=rng(0.0, None))  # 0 = diversity only
    flip: bool = False                        # flip disagreement in the uncertainty (a 2nd forward pass)
    start: str = field(default="medoid", metadata=choice(*START_RULES))   # first pick; random uses seed
    seed: int = 0
    top: Optional[int] = field(default=None, metadata=rng(1, None))       # list length (null = every frame)
    sheet: int = field(default=20, metadata=rng(1, None))                 # frames on the contact sheet
    batch_size: int = field(default=16, metadata=rng(1, None))
    device: str = field(default="cpu", metadata=choice("auto", "cpu", "cuda"))
    run_dir: str = "runs/suggest/visp_cube"
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def labels_choice(self) -> str | None:
        if self.real_labels == AUTO:
            return None if self.source else VISP
        return self.real_labels

    def budget_k(self) -> int | None:
        """The TypiClust budget (None with kcenter)."""
        if self.strategy != "typiclust":
            return None
        return self.budget or self.top or 10

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint", "a checkpoint (sim2real suggest-labels --from <best.pt>)")
        if self.frames is not None and (len(self.frames) != 2 or self.frames[0] >= self.frames[1]):
            raise ConfigError("frames", "[start, stop) with start < stop", self.frames)
        if not self.source and self.labels_choice() is None:
            raise ConfigError("source", "a video or frame folder when real_labels is null (nothing to rank)",
                              self.source)


@dataclass
class Candidates:
    """Frames to rank: images plus, per frame, its number, file name (labels-relative when known) and path."""

    images: list[np.ndarray]
    frames: list[int | None]
    file_names: list[str | None]
    paths: list[str | None]
    source: str
    excluded_eval: list = field(default_factory=list)   # frames/files left out as evaluation-only
    skipped_unreadable: list = field(default_factory=list)
    labels: Optional[str] = None                        # the real labels file whose splits were applied


def _labels(cfg: SuggestConfig) -> tuple[CocoSet | None, Splits | None]:
    labels = cfg.labels_choice()
    if labels is None:
        return None, None
    if labels == VISP:
        coco = load_coco(visp_cube_labels_path(), cfg.real_image_root) if cfg.real_image_root else load_visp_cube_dev()
    else:
        coco = load_coco(labels, cfg.real_image_root)
    if cfg.splits_file:
        return coco, load_splits(cfg.splits_file, coco)
    kw = dict(VISP_CUBE_SPLIT_DEFAULTS) if labels == VISP else {}
    kw.update(n_val=cfg.n_val, n_test=cfg.n_test, gap=cfg.split_gap)
    return coco, make_splits(coco, k=0, seed=cfg.split_seed, **kw)


def _resolved(p) -> str | None:
    try:
        return str(Path(p).resolve())
    except (OSError, RuntimeError):
        return None


def collect_candidates(cfg: SuggestConfig) -> Candidates:
    coco, splits = _labels(cfg)
    frames: list = []
    names: list = []
    paths: list = []
    images: list[np.ndarray] = []
    skipped, excluded = [], []
    if not cfg.source:
        assert coco is not None and splits is not None
        pool = splits["pool"][::cfg.stride][:cfg.max_frames]
        for i in pool:
            im = coco.image_by_id(i)
            try:
                images.append(load_image(im.path))
            except ImageReadError as e:
                skipped.append(f"{im.file_name}: {e.reason}")
                continue
            frames.append(im.frame)
            names.append(im.file_name)
            paths.append(_resolved(im.path))
        source = f"{coco.source} (labelling pool split: {len(pool)} frames)"
        excluded = [coco.image_by_id(i).file_name for s in ("val", "test", "excluded") for i in splits[s]]
    else:
        window = range(*cfg.frames) if cfg.frames else None
        footage = open_footage(cfg.source, stride=1, frames=window, max_frames=None)  # refuses protected frames
        label_of: dict[str, str] = {}
        evaluation: set[str] = set()
        if coco is not None:
            for im in coco:
                r = _resolved(im.path)
                if r:
                    label_of[r] = im.file_name
            for s in ("val", "test", "excluded"):
                for i in splits[s]:
                    r = _resolved(coco.image_by_id(i).path)
                    if r:
                        evaluation.add(r)
        if isinstance(footage, FrameFolderFootage):
            keep = []
            for index, p in footage.indexed:
                if _resolved(p) in evaluation:
                    excluded.append(index)   # dropped before it is read
                else:
                    keep.append(index)
            if not keep:
                raise RealDataError(f"footage {cfg.source}: every frame in range is an evaluation-only frame of "
                                    f"{coco.source if coco else 'the labels'}")
            footage = FrameFolderFootage(cfg.source, stride=cfg.stride, frames=keep, max_frames=cfg.max_frames)
            where = dict(footage.indexed)
            for index, img in footage:
                frames.append(index)
                images.append(img)
                r = _resolved(where[index])
                paths.append(r)
                names.append(label_of.get(r or "", Path(where[index]).name))
        else:
            footage = open_footage(cfg.source, stride=cfg.stride, frames=window, max_frames=cfg.max_frames)
            for index, img in footage:
                frames.append(index)
                images.append(img)
                names.append(None)
                paths.append(None)
        skipped = [f"frame {i}: {why}" for i, why in footage.report.skipped]
        source = str(cfg.source)
    if skipped:
        log.warning("suggest-labels: skipped %d unreadable frame(s), e.g. %s", len(skipped), skipped[0])
    if not images:
        raise RealDataError(f"{source}: no readable candidate frame")
    return Candidates(images, frames, names, paths, source, excluded, skipped,
                      None if coco is None else str(coco.source))


def suggest(cfg: SuggestConfig) -> dict:
    """Rank the candidates and write the run folder; returns the ``suggestions.json`` document."""
    cfg.validate()
    t0 = time.perf_counter()
    out = check_fresh_run_dir(cfg.run_dir, "suggestions.json", "choose another run_dir=... or delete the folder")
    cands = collect_candidates(cfg)
    model, device, _ = load_model(cfg.checkpoint, cfg.device)
    fs = score_frames(model, cands.images, device, cfg.batch_size, flip=cfg.flip)
    top = len(cands.images) if cfg.top is None else min(cfg.top, len(cands.images))
    feats = fs.features(cfg.features)
    budget = cfg.budget_k()
    clus = None
    if budget is not None:
        budget = min(budget, len(cands.images))
        clus = typiclust(feats, budget, cfg.seed, cfg.knn)
    rank = k_center_greedy(feats, fs.uncertainty, cfg.uncertainty_weight, cfg.start, cfg.seed, k=top,
                           init=None if clus is None else clus.picks[:top])
    rows = []
    for n, j in enumerate(rank.order):
        picked = clus is not None and n < len(clus.picks)
        rows.append({"rank": n + 1, "frame": cands.frames[j], "file_name": cands.file_names[j], "path": cands.paths[j],
                     "score": round(float(rank.score[n]), 6), "diversity": round(float(rank.diversity[n]), 6),
                     "uncertainty": round(float(rank.uncertainty[n]), 6), "top_score": round(float(fs.top_score[j]), 6),
                     "u_score": round(float(fs.u_score[j]), 6), "u_flip": round(float(fs.u_flip[j]), 6),
                     "cluster": int(clus.cluster[j]) if picked else None,
                     "typicality": round(float(clus.typicality[j]), 6) if picked else None})
    feature_text = ("last backbone stage pooled over the frame's own detections at the score threshold "
                    "(score-weighted), L2-normalised" if cfg.features == "object"
                    else "embed (pooled last backbone stage, L2-normalised)")
    doc = {"format": FORMAT, "checkpoint": str(cfg.checkpoint), "source": cands.source,
           "labels": cands.labels,
           "method": {"strategy": cfg.strategy, "features": feature_text,
                      "budget": budget, "knn": cfg.knn if budget is not None else None,
                      "selection": (f"TypiClust: k-means into {budget} clusters, the most typical frame of each "
                                    "(largest cluster first); the rest: k-centre greedy from them"
                                    if budget is not None else "k-centre greedy"),
                      "diversity": "k-centre greedy",
                      "start": cfg.start if budget is None else None, "seed": cfg.seed,
                      "uncertainty": "(1 - top score + flip disagreement) / 2"
                      if cfg.flip else "1 - top score", "uncertainty_weight": cfg.uncertainty_weight},
           "candidates": len(cands.images), "excluded_evaluation_only": len(cands.excluded_eval),
           "skipped_unreadable": len(cands.skipped_unreadable),
           "object_feature_fallback": int(fs.fallback.sum()) if cfg.features == "object" else None,
           "suggestions": rows}
    atomic_write_json(out / "suggestions.json", doc, indent=1)
    atomic_write_text(out / "suggestions.csv", ",".join(COLUMNS) + "\n" + "".join(
        ",".join("" if r[c] is None else str(r[c]) for c in COLUMNS) + "\n" for r in rows))
    shown = rank.order[:cfg.sheet]
    sheet = contact_sheet([cands.images[j] for j in shown],
                          [f"#{n + 1}  " + (f"frame {cands.frames[j]}" if cands.frames[j] is not None
                                            else str(cands.file_names[j])) for n, j in enumerate(shown)])
    save_png(sheet, out / "contact_sheet.png")
    _report(cfg, out, doc, rows, time.perf_counter() - t0)
    return doc


def _report(cfg: SuggestConfig, out: Path, doc: dict, rows: list[dict], wall_s: float) -> None:
    cols = ["rank", "frame", "file_name", "score", "diversity", "uncertainty", "top_score", "u_flip", "cluster",
            "typicality"]
    m = doc["method"]
    how = (f"Strategy {m['strategy']}" + (f" (budget {m['budget']}: the first {m['budget']} rows are its selection)"
                                          if m["budget"] else "") + f"; features: {m['features']}"
           + (f" ({doc['object_feature_fallback']} frame(s) without a detection: whole frame)"
              if doc["object_feature_fallback"] is not None else "") + ". ")
    intro = (f"<p>{how}{doc['candidates']} candidate frame(s) from {doc['source']}; "
             f"{doc['excluded_evaluation_only']} evaluation-only frame(s) left out, "
             f"{doc['skipped_unreadable']} unreadable skipped. Label from the top; "
             f"<code>sim2real adapt kshot_list={out / 'suggestions.json'} k=K</code> trains on the first K.</p>")
    write_html(out / "report.html", "sim2real suggest-labels", [("Ranked frames", intro + html_table(rows[:50], cols))],
               {"Contact sheet (top frames, rank order)": out / "contact_sheet.png"})
    logger = open_run(out, cfg, cfg.tracking, to_dict(cfg), seed=cfg.seed, command="suggest-labels")
    try:
        for r in rows:
            logger.log({k: r[k] for k in ("rank", "score", "diversity", "uncertainty", "top_score", "u_flip")},
                       step=r["rank"])
        logger.log_media("suggest/contact_sheet", out / "contact_sheet.png", kind="image")
        logger.log_media("suggest/report", out / "report.html", kind="html")
        logger.summary({"candidates": doc["candidates"], "excluded_evaluation_only": doc["excluded_evaluation_only"],
                        "strategy": cfg.strategy, "features": cfg.features, "budget": doc["method"]["budget"],
                        "object_feature_fallback": doc["object_feature_fallback"],
                        "skipped_unreadable": doc["skipped_unreadable"], "wall_s": round(wall_s, 2),
                        "top_frames": [r["frame"] for r in rows[:10]]})
    finally:
        logger.close()
