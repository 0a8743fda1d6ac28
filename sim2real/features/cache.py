"""Frozen-backbone features computed once and memory-mapped from disk (fp16 ``.npy``).

An entry is a folder ``<cache_dir>/<key>/`` with one ``feat.<name>.npy`` per tensor the frozen
part returns (N x shape, float16, written through ``np.lib.format.open_memmap``), ``geom.npy``
(N x 6 preprocessing geometry, to map labels to model-input pixels), ``valid.npy`` (False for
corrupt images) and ``meta.json``.  The key hashes everything the
features depend on: dataset content (annotation bytes + each image's size and mtime, or its bytes),
backbone name, frozen weights, cut point, preprocessing config, compute device/precision and the
augmentation view.  Change any
of them and the key changes (a miss); nothing is ever updated in place.

A read-only cache folder serves its existing entries; a miss there is refused with an
:class:`~sim2real.io.OutputError` naming the folder and the way out (``cache_dir=`` elsewhere; ``sim2real
train`` adds ``cache=false``) rather than silently training without the cache (many times slower).  A disk
that fills up while an entry is built is the same one-line error; the half-built entry is removed.

The entry is built in a temporary sibling folder and renamed into place in one step, so a killed
run leaves at worst an orphan ``.tmp-*`` folder (cleaned up later), never a half-written entry.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sim2real.data.dataset import CocoDataset, collate
from sim2real.io import OutputError

FORMAT_VERSION = 1
ENV_VAR = "SIM2REAL_CACHE"
_STALE_TMP_S = 24 * 3600


def default_cache_dir() -> Path:
    """``$SIM2REAL_CACHE`` if set, else ``~/.cache/sim2real/features``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sim2real" / "features"


def dataset_fingerprint(ds: CocoDataset, content: bool = False) -> str:
    """Hash of annotation bytes plus every image's (name, size, mtime) - or its bytes if ``content``."""
    h = hashlib.sha256()
    h.update(ds.ann_file.read_bytes())
    for name in ds.file_names:
        p = ds.image_root / name
        h.update(name.encode())
        if content:
            h.update(hashlib.sha256(p.read_bytes()).digest())
        else:
            st = p.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_key(parts: dict) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class FeatureStore:
    """One cached entry, memory-mapped read-only."""

    path: Path
    features: dict[str, np.ndarray]   # name -> (N, ...) float16 memmap
    geom: np.ndarray                  # (N, 6) float64, see sim2real.data.dataset.geometry_of
    valid: np.ndarray                 # (N,) bool
    meta: dict = field(default_factory=dict)
    hit: bool = False                 # True when it was already on disk
    build_seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    @property
    def num_corrupt(self) -> int:
        return int((~self.valid).sum())

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.features.values()))

    def batch(self, indices: np.ndarray | list[int]) -> dict[str, torch.Tensor]:
        """float32 tensors of rows ``indices`` (read in sorted order, returned in the given order)."""
        idx = np.asarray(indices, np.int64)
        order = np.argsort(idx, kind="stable")
        out = {}
        for name, arr in self.features.items():
            rows = np.empty((len(idx),) + arr.shape[1:], np.float16)
            rows[order] = arr[idx[order]]
            out[name] = torch.from_numpy(rows.astype(np.float32))
        return out


def _load(path: Path, hit: bool) -> FeatureStore | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
        feats = {name: np.load(path / f"feat.{name}.npy", mmap_mode="r") for name in meta["names"]}
        geom = np.load(path / "geom.npy")
        valid = np.load(path / "valid.npy")
    except (OSError, ValueError, KeyError):
        return None
    n = meta.get("count")
    if any(a.shape[0] != n or a.dtype != np.float16 for a in feats.values()) or len(valid) != n:
        return None
    return FeatureStore(path, feats, geom, valid, meta, hit=hit, build_seconds=meta.get("build_seconds", 0.0))


_WHAT_TO_DO = "set cache_dir= to a writable folder with free space (or $SIM2REAL_CACHE)"


def _cache_write_error(e: OSError, cache_dir: Path) -> OutputError:
    return OutputError(e.errno, f"cannot write to the feature cache folder {cache_dir}: {e.strerror or e}; "
                                f"{_WHAT_TO_DO}")


def _new_memmap(path: Path, shape: tuple) -> np.memmap:
    """A writable fp16 ``.npy`` memmap whose blocks are allocated now: writing into a sparse memory
    map on a full disk kills the process with SIGBUS, while ``posix_fallocate`` fails with ENOSPC."""
    try:
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        if hasattr(os, "posix_fallocate"):
            with open(path, "rb+") as fh:
                try:
                    os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
        return arr
    except OSError as e:
        raise _cache_write_error(e, path.parent.parent) from None


def _clean_stale_tmp(cache_dir: Path) -> None:
    now = time.time()
    for p in cache_dir.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


@torch.no_grad()
def build_or_load(ds: CocoDataset, extract: Callable[[torch.Tensor], dict[str, torch.Tensor]], key_parts: dict,
                  cache_dir: str | Path | None = None, batch_size: int = 32, device: str | torch.device = "cpu",
                  num_workers: int = 0, progress: bool = True, desc: str = "caching features") -> FeatureStore:
    """The cached features of ``ds`` under ``key_parts``; computed with ``extract`` on a miss.

    ``extract`` maps a preprocessed image batch to the frozen part's outputs ``{name: tensor}``;
    it is called in ``torch.no_grad`` and must be deterministic (the caller sets eval mode).
    ``ds`` must have ``preprocess`` (and ``augment`` for augmented views) set already.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = cache_key(key_parts)
    final = cache_dir / key
    if final.is_dir():
        store = _load(final, hit=True)
        if store is not None:
            return store
        shutil.rmtree(final, ignore_errors=True)  # unreadable entry (e.g. disk trouble): rebuild
    tmp = cache_dir / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        # A read-only cache folder is refused, not silently skipped: training without the cache
        # recomputes the frozen part every step (much slower), which the user should choose.
        raise OutputError(e.errno, f"the feature cache folder {cache_dir} is not writable ({e.strerror}); "
                                   f"{_WHAT_TO_DO}") from None
    _clean_stale_tmp(cache_dir)
    t0 = time.perf_counter()
    try:
        n = len(ds)
        # Its own generator: whether the cache hits must not change the caller's RNG stream
        # (a resumed run, which hits, must draw the same dropout masks as the original run).
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
                            generator=torch.Generator().manual_seed(0))
        feats: dict[str, np.ndarray] = {}
        geom = np.zeros((n, 6), np.float64)
        valid = np.zeros(n, bool)
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            if "image" not in batch:
                continue
            out = extract(batch["image"].to(device))
            idx = batch["index"].numpy()
            for name, t in out.items():
                arr = t.float().clamp_(-65504.0, 65504.0).cpu().numpy().astype(np.float16)  # fp16 range
                if name not in feats:
                    feats[name] = _new_memmap(tmp / f"feat.{name}.npy", (n,) + arr.shape[1:])
                feats[name][idx] = arr
            geom[idx] = batch["geom"].numpy()
            valid[idx] = True
        if not feats:
            raise ValueError(f"{ds.ann_file}: no readable image to cache features from "
                             f"({len(ds)} images, all corrupt or none)")
        names = list(feats)
        meta = {"key": key, "count": n, "names": names, "key_parts": key_parts, "num_corrupt": int((~valid).sum()),
                "build_seconds": time.perf_counter() - t0, "created": time.time()}
        try:
            for arr in feats.values():
                arr.flush()
            feats.clear()
            np.save(tmp / "geom.npy", geom)
            np.save(tmp / "valid.npy", valid)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        except OSError as e:
            raise _cache_write_error(e, cache_dir) from None
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same entry first; theirs is identical.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store = _load(final, hit=False)
    if store is None:
        raise OSError(f"feature cache entry {final} could not be read back after writing it")
    return store


def describe_entry(store: FeatureStore) -> dict[str, Any]:
    return {"path": str(store.path), "hit": store.hit, "count": len(store), "mbytes": round(store.nbytes / 2**20, 2),
            "shapes": {k: list(v.shape[1:]) for k, v in store.features.items()},
            "num_corrupt": store.num_corrupt, "build_seconds": round(store.build_seconds, 3)}


def frames_fingerprint(frames) -> str:
    """Hash of in-memory frames (shape and bytes of each), for sets with no file to stat."""
    h = hashlib.sha256()
    for f in frames:
        h.update(str(f.shape).encode())
        h.update(hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest())
    return h.hexdigest()


def frozen_part_key(model, cut: int | None = None, compute: str | None = None) -> dict:
    """What the frozen part's outputs depend on besides the images: the cut layout
    (:meth:`~sim2real.models.PerceptionModel.cut_info`), the frozen weights as they are now
    (:meth:`~sim2real.models.PerceptionModel.frozen_digest`), the preprocessing and where they
    were computed (``compute``, e.g. ``cuda-fp16``: outputs differ slightly between devices)."""
    return {"model": model.cut_info(cut), "frozen_weights": model.frozen_digest(cut),
            "preprocess": model.preprocess_cfg, "compute": compute}


def _view(augment) -> dict:
    return augment.describe() if augment is not None else {"view": 0}


def feature_key_parts(model, ds: CocoDataset, augment=None, content: bool = False, *, cut: int | None = None,
                      compute: str | None = None) -> dict:
    """Everything the frozen part's output on ``ds`` depends on (see module docstring), for
    :func:`build_or_load`. ``augment``: the view's transform (anything with ``describe()``);
    ``cut``: leading stages cached (default: the model's frozen ones)."""
    return {"dataset": dataset_fingerprint(ds, content), "num_images": len(ds),
            **frozen_part_key(model, cut, compute), "view": _view(augment)}


def frames_key_parts(model, frames, source_id: str, augment=None, *, cut: int | None = None,
                     compute: str | None = None) -> dict:
    """:func:`feature_key_parts` for in-memory frames (footage) named ``source_id``."""
    return {"frames": frames_fingerprint(frames), "frames_id": source_id, "num_images": len(frames),
            **frozen_part_key(model, cut, compute), "view": _view(augment)}
