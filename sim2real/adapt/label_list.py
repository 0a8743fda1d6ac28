"""The label-suggestion list (``suggestions.json`` / ``.csv``) and how ``adapt`` takes its k-shot set from it.

Format (docs/contracts.md, "Label suggestions"): ``{"format": "sim2real-label-suggestions/1", ...,
"suggestions": [{"rank": 1, "frame": 42, "file_name": "mbt/cube/image0042.pgm", "path": "/abs/...",
"score", "diversity", "uncertainty", ...}, ...]}`` best first. ``adapt kshot_list=<file>`` uses the
first k entries that are labelled frames of the labelling pool (the ``pool`` split of the real
labels' splits), in list order:

- an entry is matched to a labelled image by its resolved ``path``, else its ``file_name`` (the
  labels' own), else (entries with neither, e.g. video frames) its ``frame`` number;
- an entry with no label (not in the labels file) is skipped and counted: a user labels only the
  top of the list;
- an entry in the val / test split or a guard frame between them (evaluation-only for this run),
  or a duplicate, is an error: the list was made for other splits, and training on it would leak
  the frames that select the model or give its real numbers;
- fewer than k usable entries is an error naming how many there are.

A CSV list (``rank,frame,file_name,path,...`` header) reads the same way.

A TypiClust list (``method.strategy = typiclust``) is the selection for one budget: its first
``method.budget`` entries are k-means(budget)'s most typical frames, so the first k of a list made
for another budget are not the selection for k. adapt still takes them (a user may have labelled
only those), warns, and records the list's budget in ``kshot_from.list_budget``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sim2real.data.real import CocoSet, RealDataError
from sim2real.data.splits import Splits

log = logging.getLogger(__name__)

FORMAT = "sim2real-label-suggestions/1"
COLUMNS = ("rank", "frame", "file_name", "path", "score", "diversity", "uncertainty", "top_score", "u_score",
           "u_flip", "cluster", "typicality")


class LabelListError(RealDataError):
    """A label-suggestion list is unreadable or does not fit the real labels / splits."""


@dataclass
class KshotPick:
    """What ``adapt`` took from a list: the image ids (list order) and what it left out."""

    ids: list[int]
    file: str
    entries: int
    skipped_unlabelled: list[str] = field(default_factory=list)
    list_budget: int | None = None   # the budget a TypiClust list was made for (None: any k fits)

    def to_dict(self) -> dict:
        return {"file": self.file, "entries": self.entries, "used": len(self.ids), "list_budget": self.list_budget,
                "skipped_unlabelled": len(self.skipped_unlabelled),
                "skipped_examples": self.skipped_unlabelled[:10]}


def read_label_list(path: str | Path) -> list[dict]:
    """The entries of a JSON or CSV suggestion list, in rank order (checked, one-line errors)."""
    p = Path(path)
    if not p.is_file():
        raise LabelListError(f"kshot_list {p}: no such file (expected suggestions.json / .csv from "
                             "sim2real suggest-labels)")
    try:
        if p.suffix.lower() == ".csv":
            with open(p, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            if rows and not {"frame", "file_name", "path"} & set(rows[0]):
                raise LabelListError(f"kshot_list {p}: CSV without a frame, file_name or path column")
        else:
            doc = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("suggestions"), list):
                raise LabelListError(f"kshot_list {p}: expected a JSON object with format {FORMAT!r} and a "
                                     "'suggestions' list")
            rows = doc["suggestions"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise LabelListError(f"kshot_list {p}: unreadable ({type(e).__name__}: {e})") from None
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise LabelListError(f"kshot_list {p}: entry {i} is not an object")
        frame = r.get("frame")
        if frame not in (None, ""):
            try:
                frame = int(frame)
            except (TypeError, ValueError):
                raise LabelListError(f"kshot_list {p}: entry {i}: frame must be an integer, got {frame!r}") from None
        else:
            frame = None
        e = {"frame": frame, "file_name": r.get("file_name") or None, "path": r.get("path") or None}
        if e == {"frame": None, "file_name": None, "path": None}:
            raise LabelListError(f"kshot_list {p}: entry {i} names no frame, file_name or path")
        out.append(e)
    if "rank" in (rows[0] if rows else {}):
        ranks = [r.get("rank") for r in rows]
        try:
            order = sorted(range(len(out)), key=lambda j: int(ranks[j]))
        except (TypeError, ValueError):
            raise LabelListError(f"kshot_list {p}: 'rank' must be integers") from None
        out = [out[j] for j in order]
    return out


def list_budget(path: str | Path) -> int | None:
    """The budget a TypiClust JSON list was made for (None: a CSV, k-centre or random list)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return None
    try:
        method = json.loads(p.read_text(encoding="utf-8")).get("method") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    b = method.get("budget") if isinstance(method, dict) and method.get("strategy") == "typiclust" else None
    return int(b) if isinstance(b, int) else None


def _resolve(path: str | Path) -> str | None:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return None


def pick_kshot(path: str | Path, coco: CocoSet, splits: Splits, k: int) -> KshotPick:
    """The first ``k`` usable entries of the list at ``path`` as image ids (see the module doc)."""
    entries = read_label_list(path)
    by_path, by_name, by_frame = {}, {}, {}
    for im in coco:
        r = _resolve(im.path)
        if r:
            by_path[r] = im.id
        by_name[im.file_name] = im.id
        if im.frame is not None:
            by_frame.setdefault(im.frame, im.id)
    pool = set(splits["pool"])
    role = {i: s for s in ("val", "test", "excluded") for i in splits[s]}
    what = {"val": "the real val split (model selection)", "test": "the real test split (evaluation-only)",
            "excluded": "a guard frame between the splits"}
    ids: list[int] = []
    skipped: list[str] = []
    for n, e in enumerate(entries, 1):
        i = None
        if e["path"]:
            i = by_path.get(_resolve(e["path"]) or "")
        if i is None and e["file_name"]:
            i = by_name.get(e["file_name"])
        if i is None and not e["path"] and not e["file_name"]:
            i = by_frame.get(e["frame"])
        label = e["file_name"] or e["path"] or f"frame {e['frame']}"
        if i is None:
            skipped.append(label)
            continue
        if i in role:
            raise LabelListError(f"kshot_list {path}: entry {n} ({label}) is in {what[role[i]]}: a k-shot frame must "
                                 "come from the labelling pool; make the list with the same splits (sim2real "
                                 "suggest-labels with this config's real_labels/n_val/n_test/split_gap)")
        if i in ids:
            raise LabelListError(f"kshot_list {path}: entry {n} ({label}) is listed twice")
        if i not in pool:
            raise LabelListError(f"kshot_list {path}: entry {n} ({label}) is not in the labelling pool")
        ids.append(i)
        if len(ids) == k:
            break   # entries past the k-th are not used, so not judged
    if len(ids) < k:
        raise LabelListError(f"kshot_list {path}: {len(ids)} usable labelled pool frame(s) "
                             f"({len(skipped)} entries without a label skipped), k={k} asked for")
    budget = list_budget(path)
    if budget is not None and budget != k:
        log.warning("kshot_list %s was made for a labelling budget of %d (TypiClust); its first k=%d are not "
                    "the selection for %d: run sim2real suggest-labels budget=%d for that", path, budget, k, k, k)
    return KshotPick(ids, str(path), len(entries), skipped, budget)
