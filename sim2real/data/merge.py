"""Join shard folders (``generate --shard k --num-shards n``) into the dataset one run would write.

Every shard frame's files are checked against the hashes in its label, then copied byte for
byte, and ``annotations.json`` is rebuilt from the label files with the same code a single run
uses, so the result equals a single-machine run with the same seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sim2real.data import coco_writer as cw
from sim2real.data.generate import (STATE_FILE, GenerateConfig, GridConfig, _check_state, _folder_lock,
                                    finalize, fingerprint, shard_frames)
from sim2real.io import check_writable


def _read_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a generated dataset folder (no {STATE_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{path} is corrupt") from None


def _copy(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    if dst.is_file() and dst.stat().st_size == len(data) and dst.read_bytes() == data:
        return  # already merged (re-running merge after an interruption)
    cw.atomic_write_bytes(dst, data)  # no fsync per file: one sync before the index is written


def merge_shards(shard_dirs: list[str | Path], out: str | Path, progress: bool = True) -> dict:
    """Check the shards belong together and are complete, then copy frames and write the index files."""
    from tqdm import tqdm

    dirs = [Path(d) for d in shard_dirs]
    if not dirs:
        raise ValueError("merge: give at least one shard folder")
    states = [_read_state(d) for d in dirs]
    first = states[0]
    for d, st in zip(dirs, states):
        if st.get("dataset_hash") != first.get("dataset_hash"):
            raise ValueError(f"{d} belongs to a different dataset than {dirs[0]} (different config, scene or "
                             "seed); only shards of one `generate` config can be merged")
        if st["num_shards"] != first["num_shards"]:
            raise ValueError(f"{d} is one of {st['num_shards']} shards, {dirs[0]} one of {first['num_shards']}")
    num_shards, num_frames = first["num_shards"], first["num_frames"]
    views = int(first.get("config", {}).get("views_per_scene", 1))
    by_shard: dict[int, Path] = {}
    for d, st in zip(dirs, states):
        if st["shard"] in by_shard and by_shard[st["shard"]].resolve() != d.resolve():
            raise ValueError(f"{d} and {by_shard[st['shard']]} are both shard {st['shard']}")
        by_shard[st["shard"]] = d
    missing = sorted(set(range(num_shards)) - set(by_shard))
    if missing:
        raise ValueError(f"merge: shards {missing} of {num_shards} are missing; give every shard folder")
    sources: dict[int, Path] = {}
    for k, d in sorted(by_shard.items()):
        want = set(shard_frames(num_frames, k, num_shards, views))
        lacking = sorted(want - cw.committed_frames(d, verify=True, frames=want))
        if lacking:
            raise ValueError(f"shard {k} in {d} is incomplete ({len(lacking)} frames missing or damaged, e.g. "
                             f"{lacking[:5]}); re-run its generate command to finish it first")
        sources.update({f: d for f in want})

    # The merged dataset's config: the shards' config as a single (unsharded) run into ``out``.
    fp = dict(first["fingerprint"])
    scene = first.get("scene", fp["scene"])
    cfg_dict = dict(first["config"], out=str(out), shard=0, num_shards=1)
    cfg = GenerateConfig(**{**cfg_dict, "grid": GridConfig(**cfg_dict["grid"])})
    fp.update(shard=0, num_shards=1)
    if fingerprint(cfg, scene) != fp:
        raise ValueError(f"{by_shard[0] / STATE_FILE} does not describe a consistent config; was it edited?")

    out = check_writable(out)
    with _folder_lock(out):
        _check_state(out, fp, cfg, scene)
        cw.remove_temp_files(out)
        frames = list(range(num_frames))
        for f in tqdm(frames, unit="frame", desc=f"merge -> {out.name}", disable=not progress):
            src = sources[f]
            label = cw.read_label(cw.label_path(src, f))
            for rel in (label["file_name"], label["depth_file"], label["mask_file"]):
                _copy(src / rel, out / rel)
            _copy(cw.label_path(src, f), cw.label_path(out, f))  # commit marker last, as in generate
        os.sync()
        return finalize(out, cfg, scene, frames, fp, {"merged_from": [str(by_shard[k]) for k in sorted(by_shard)]})
