"""Stored train/val/test splits of a labelled real set, so experiments are comparable.

``make_splits(coco, k, n_val, seed)`` assigns every image to one of

- ``pool``: candidates for labelled training; ``train`` = the k-shot set drawn from it;
- ``val``: model selection / tuning;
- ``test``: final real numbers;
- ``excluded``: guard frames between pool, val and test (temporal footage only);

and ``unlabelled`` = ``pool`` (the frames adaptation may use without labels; explicit in the file).

**Temporal footage** (every image has a ``frame`` number) uses ``strategy="chronological"``:
``[pool | gap | val | gap | test]`` in time order.  Neighbouring frames of a sequence are near
duplicates (the first 36 frames of the ViSP cube are a static scene), so shuffling frames or
short blocks between train and test would leak; contiguous segments with ``gap`` frames between
them do not, and testing on the latest frames mirrors deployment on a robot's future frames.
Other sets use ``strategy="random"`` (seeded shuffle).

The k-shot set is nested across k for one seed (``train(k=5)`` is a subset of ``train(k=10)``):
the first frame is drawn with the seed, the next ones greedily maximise the time distance to the
frames already chosen (so k frames cover the pool, not one moment); without frame numbers it is
a prefix of a seeded permutation.

The file records the source labels' SHA-256; loading it against a changed labels file raises
:class:`SplitSourceChangedError`.  Same inputs and seed -> the same bytes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim2real.data.real import CocoSet, file_sha256
from sim2real.io import atomic_write_text

FORMAT = "sim2real-splits/1"
SPLIT_NAMES = ("train", "pool", "val", "test", "unlabelled", "excluded")


class SplitsError(ValueError):
    """A splits file is invalid or does not fit the labels it is used with."""


class SplitSourceChangedError(SplitsError):
    """The labels file changed since the splits were made (its hash differs)."""


@dataclass
class Splits:
    source: str
    source_sha256: str
    seed: int
    k: int
    n_val: int
    n_test: int
    strategy: str
    gap: int
    ids: dict[str, list[int]]
    file_names: dict[int, str] = field(repr=False)
    frames: dict[int, int | None] = field(repr=False)
    # Set when adaptation read its unlabelled frames from footage instead of the pool split
    # (``ids["unlabelled"]`` is then empty): {"source", "read", ...}.
    unlabelled_from: dict | None = field(default=None, repr=False)

    def __getitem__(self, split: str) -> list[int]:
        if split not in self.ids:
            raise KeyError(f"unknown split {split!r}; splits: {', '.join(SPLIT_NAMES)}")
        return self.ids[split]

    def subset(self, coco: CocoSet, split: str) -> CocoSet:
        """The images of ``split`` as a :class:`CocoSet` (checked against the labels' hash)."""
        check_source(self, coco)
        return coco.subset(self[split])

    def frame_indices(self, split: str) -> list[int]:
        """Frame numbers of ``split`` (for footage readers); needs temporal labels."""
        out = [self.frames[i] for i in self[split]]
        if any(f is None for f in out):
            raise SplitsError(f"splits of {self.source} have no frame numbers (labels without 'frame')")
        return out  # type: ignore[return-value]

    def to_dict(self) -> dict:
        def entries(split):
            return [{"id": i, "file_name": self.file_names[i], "frame": self.frames[i]} for i in self.ids[split]]
        d = {
            "format": FORMAT,
            "source": {"file": self.source, "sha256": self.source_sha256},
            "params": {"seed": self.seed, "k": self.k, "n_val": self.n_val, "n_test": self.n_test,
                       "strategy": self.strategy, "gap": self.gap},
            "counts": {s: len(self.ids[s]) for s in SPLIT_NAMES},
            "splits": {s: entries(s) for s in SPLIT_NAMES},
        }
        if self.unlabelled_from is not None:
            d["unlabelled_from"] = self.unlabelled_from
        return d

    def save(self, path: str | Path) -> Path:
        # Deterministic bytes: fixed key order, no time stamps.
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")


def _kshot(pool: list[int], k: int, frames: dict[int, int | None], rng: np.random.Generator) -> list[int]:
    if k == 0:
        return []
    if any(frames[i] is None for i in pool):
        return [pool[j] for j in rng.permutation(len(pool))[:k]]
    t = np.array([frames[i] for i in pool], dtype=np.int64)
    chosen = [int(rng.integers(len(pool)))]
    dist = np.abs(t - t[chosen[0]])
    while len(chosen) < k:
        j = int(np.argmax(dist))  # first maximum: deterministic ties
        chosen.append(j)
        dist = np.minimum(dist, np.abs(t - t[j]))
    return [pool[j] for j in chosen]


def make_splits(coco: CocoSet, k: int, n_val: int, seed: int, n_test: int | None = None,
                strategy: str | None = None, gap: int = 2) -> Splits:
    """Split ``coco`` into pool/train(k)/val/test (see module doc); nothing is written.

    ``n_test`` defaults to ``max(n_val, 30 % of the images)``; ``strategy`` defaults to
    "chronological" for temporal labels and "random" otherwise; ``gap`` guard frames separate
    chronological segments.
    """
    n = len(coco)
    if coco.sha256 is None or coco.source is None:
        raise SplitsError("splits need a CocoSet loaded from a file (load_coco), to record its hash")
    strategy = strategy or ("chronological" if coco.is_temporal else "random")
    if strategy not in ("chronological", "random"):
        raise SplitsError(f"strategy must be 'chronological' or 'random', got {strategy!r}")
    if strategy == "chronological" and not coco.is_temporal:
        raise SplitsError(f"{coco.source}: strategy 'chronological' needs a 'frame' number on every image")
    if strategy == "random" and coco.is_temporal:
        warnings.warn(f"{coco.source}: random splits of a frame sequence put near-duplicate neighbouring "
                      "frames in train and test; prefer strategy='chronological'", stacklevel=2)
    if n_test is None:
        n_test = max(n_val, int(round(0.3 * n)))
    for name, v in (("k", k), ("n_val", n_val), ("n_test", n_test), ("gap", gap), ("seed", seed)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise SplitsError(f"{name} must be a non-negative integer, got {v!r}")
    gaps = 2 * gap if strategy == "chronological" else 0
    n_pool = n - n_val - n_test - gaps
    if n_pool < max(k, 1):
        raise SplitsError(f"{coco.source}: {n} images cannot hold val={n_val} + test={n_test} + "
                          f"{gaps} guard frames and a training pool of at least k={max(k, 1)}")

    rng = np.random.default_rng(seed)
    if strategy == "chronological":
        order = [im.id for im in sorted(coco.images, key=lambda im: (im.frame, im.id))]
        pool = order[:n_pool]
        val = order[n_pool + gap:n_pool + gap + n_val]
        test = order[n - n_test:]
        excluded = order[n_pool:n_pool + gap] + order[n_pool + gap + n_val:n - n_test]
    else:
        perm = [coco.images[j].id for j in rng.permutation(n)]
        val, test, pool = perm[:n_val], perm[n_val:n_val + n_test], perm[n_val + n_test:]
        excluded = []
        by_pos = {im.id: p for p, im in enumerate(coco.images)}
        val, test, pool = (sorted(s, key=by_pos.__getitem__) for s in (val, test, pool))
    frames = {im.id: im.frame for im in coco.images}
    train = _kshot(pool, k, frames, np.random.default_rng([seed, 1]))
    ids = {"train": train, "pool": pool, "val": val, "test": test, "unlabelled": list(pool), "excluded": excluded}
    return Splits(str(coco.source), coco.sha256, int(seed), int(k), int(n_val), int(n_test), strategy, int(gap),
                  ids, {im.id: im.file_name for im in coco.images}, frames)


def save_splits(splits: Splits, path: str | Path) -> Path:
    return splits.save(path)


def check_source(splits: Splits, coco: CocoSet) -> None:
    """Raise if ``coco`` is not the labels the splits were made from, or lacks their images."""
    if coco.sha256 != splits.source_sha256:
        raise SplitSourceChangedError(
            f"splits were made from {splits.source} with SHA-256 {splits.source_sha256[:16]}..., but the "
            f"labels given ({coco.source}) have SHA-256 {str(coco.sha256)[:16]}...: the labels changed; "
            "re-make the splits (and re-run experiments that used them)")
    for split in SPLIT_NAMES:
        for i in splits.ids[split]:
            try:
                im = coco.image_by_id(i)
            except KeyError:
                raise SplitsError(f"split '{split}' lists image id {i}, absent from {coco.source}") from None
            if im.file_name != splits.file_names[i]:
                raise SplitsError(f"split '{split}' lists image id {i} as {splits.file_names[i]!r} but "
                                  f"{coco.source} has {im.file_name!r}")


def load_splits(path: str | Path, coco: CocoSet | None = None) -> Splits:
    """Read a splits file; with ``coco`` (or else the recorded labels file, re-hashed) check that the
    labels are unchanged -> :class:`SplitSourceChangedError` otherwise."""
    p = Path(path)
    if not p.is_file():
        raise SplitsError(f"splits file {p} does not exist")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.get("format") != FORMAT:
            raise SplitsError(f"{p}: expected format {FORMAT!r}, got {d.get('format')!r}")
        src, prm, sp = d["source"], d["params"], d["splits"]
        ids, file_names, frames = {}, {}, {}
        for s in SPLIT_NAMES:
            ids[s] = []
            for e in sp[s]:
                ids[s].append(int(e["id"]))
                file_names[int(e["id"])] = str(e["file_name"])
                frames[int(e["id"])] = e.get("frame")
        splits = Splits(str(src["file"]), str(src["sha256"]), int(prm["seed"]), int(prm["k"]), int(prm["n_val"]),
                        int(prm["n_test"]), str(prm["strategy"]), int(prm["gap"]), ids, file_names, frames,
                        d.get("unlabelled_from"))
    except json.JSONDecodeError as e:
        raise SplitsError(f"{p}: not valid JSON ({e})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, SplitsError):
            raise
        raise SplitsError(f"{p}: malformed splits file ({type(e).__name__}: {e})") from None
    if coco is not None:
        check_source(splits, coco)
    else:
        src_path = Path(splits.source)
        if not src_path.is_file():
            raise SplitsError(f"{p}: the labels file it was made from, {src_path}, does not exist; "
                              "pass the labels (load_splits(path, coco)) to check them")
        digest = file_sha256(src_path)
        if digest != splits.source_sha256:
            raise SplitSourceChangedError(
                f"{p}: labels file {src_path} changed since the splits were made (SHA-256 "
                f"{digest[:16]}... now, {splits.source_sha256[:16]}... recorded); re-make the splits")
    return splits
