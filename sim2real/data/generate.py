"""Parallel, deterministic, resumable synthetic-dataset generator.

* Views: frames come in groups of ``views_per_scene`` (V) views of one randomized scene — frame
  ``i`` shows scene ``g = i // V`` (objects, looks, settled physics: built from
  ``scene_seed(seed, g)``) from view ``i % V`` (camera pose/intrinsics jitter, light and image
  noise: from ``frame_seed(seed, i)``).  A scene costs several renders to build, so V views of it
  cost far less than V scenes; ``views_per_scene=1`` gives a new scene per frame.
* Deterministic: frame ``i`` is ``env.reset(seed=frame_seed(seed, i), options={"scene_seed":
  scene_seed(seed, i // V)})``, and the env renders the same bytes whether it built that scene
  just now or rendered other views of it before; so a frame depends only on ``(seed, i)``, V
  and the scene config — not on worker count, order or sharding.
* Parallel: ``workers`` spawned processes (pybullet + fork is fragile), each making one env and
  rendering whole scene groups; every worker writes its frames itself (no images cross processes).
* Resumable: a frame's label JSON is written last, after its image/depth/mask, all atomically.
  A re-run keeps frames whose label is intact and whose files match the hashes it recorded,
  re-renders the rest, deletes temp files of interrupted writes and refuses a folder made with
  a different config (``generate_state.json`` keeps a hash of it).
* Sharded: ``shard=k, num_shards=n`` renders the strided scene groups ``k, k+n, k+2n, ...`` —
  strided rather than contiguous so every shard sees the same mix when some shards finish late.
  ``sim2real merge`` joins shards into the dataset a single run would have written.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sim2real.config import ConfigError, choice, rng, save_config, to_dict
from sim2real.data import coco_writer as cw
from sim2real.io import OutputError, atomic_write_json, check_writable
from sim2real.paths import REPO_ROOT, bundled_config

STATE_FILE = "generate_state.json"
BOP_DIR = "bop"  # format: bop writes the BOP layout here, inside the dataset folder
STATE_VERSION = 1
# Keys that do not change a single byte of frame data (or are checked separately, like shards).
_NOT_HASHED = ("out", "workers", "progress", "grid", "scene_file", "scene", "chunksize", "format")
_SHARD_KEYS = ("shard", "num_shards")


@dataclass
class GridConfig:
    enabled: bool = True
    num: int = field(default=16, metadata=rng(1, 256))
    cols: int = field(default=4, metadata=rng(1, 64))
    cell_width: int = field(default=256, metadata=rng(32, 2048))


@dataclass
class GenerateConfig:
    out: str = "data/sim/tabletop"
    num_frames: int = field(default=64, metadata=rng(1, None))
    workers: int = field(default=1, metadata=rng(1, 256))
    seed: int = field(default=0, metadata=rng(0, 2**63 - 1))
    image_format: str = field(default="png", metadata=choice("png", "jpg"))
    jpeg_quality: int = field(default=95, metadata=rng(1, 100))
    png_compression: int = field(default=1, metadata=rng(0, 9))
    env_id: str = "sim2real_envs:sim2real/Tabletop-v0"
    renderer: str = field(default="tiny", metadata=choice("tiny", "egl"))
    # Scene YAML ("" = the env's embedded default scene); ``scene`` keys are merged on top,
    # so ``scene.camera.width=128`` works on the command line.
    scene_file: str = "configs/scenes/default.yaml"
    scene: dict = field(default_factory=dict)
    # Frames per randomized scene (each a new camera pose, light and image noise); 1 = a new
    # scene every frame.  Building a scene costs ~2-4 renders, so 8 views make frames ~3x cheaper.
    views_per_scene: int = field(default=8, metadata=rng(1, 4096))
    shard: int = field(default=0, metadata=rng(0, None))
    num_shards: int = field(default=1, metadata=rng(1, None))
    # Frames handed to a worker at once (rounded up to whole scene groups).
    chunksize: int = field(default=1, metadata=rng(1, 1024))
    progress: bool = True
    grid: GridConfig = field(default_factory=GridConfig)
    # coco: the dataset as documented; bop: the same, plus the BOP layout under <out>/bop/
    # (sim2real.data.bop.export_bop; frame bytes and annotations.json do not change).
    format: str = field(default="coco", metadata=choice("coco", "bop"))

    def validate(self) -> None:
        if self.shard >= self.num_shards:
            raise ConfigError("shard", f"an index in [0, num_shards - 1] = [0, {self.num_shards - 1}]", self.shard)
        groups = num_scenes(self.num_frames, self.views_per_scene)
        if self.num_shards > groups:
            raise ConfigError("num_shards", f"at most the number of scenes = ceil(num_frames / views_per_scene) "
                                            f"= {groups}", self.num_shards)
        if not self.out:
            raise ConfigError("out", "an output folder")
        self.env_id = canonical_env_id(self.env_id)


class ResumeError(ValueError):
    """The output folder holds a dataset that this config would not reproduce."""


# --------------------------------------------------------------------------------------------
# Config -> scene, seeds, frame lists, fingerprint


ENV_MODULE = "sim2real_envs"
_OLD_ENV_MODULE = "envs"  # its old name (generic: another PyPI distribution installs a module `envs`)


def canonical_env_id(env_id: str) -> str:
    """``envs:<id>`` (the package's old module name, still in older configs) -> ``sim2real_envs:<id>``."""
    module, sep, rest = env_id.partition(":")
    return f"{ENV_MODULE}:{rest}" if sep and module == _OLD_ENV_MODULE else env_id


def resolve_scene_file(scene_file: str) -> Path:
    """A relative ``scene_file`` is looked up in the working directory, then in the project root,
    then among the configs shipped inside the package (``configs/scenes/...`` after a wheel install)."""
    p = Path(scene_file).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    alt = REPO_ROOT / p
    if alt.is_file():
        return alt
    return bundled_config(scene_file) or p


def load_scene(cfg: GenerateConfig) -> dict | None:
    """The scene dict handed to the env: ``scene_file`` with ``cfg.scene`` merged on top.

    Without a ``scene_file``, ``cfg.scene`` is the whole scene (empty = the env's embedded default).
    Relative asset paths resolve next to the scene file, as when the env loads the file itself.
    """
    if not cfg.scene_file:
        return copy.deepcopy(cfg.scene) or None
    path = resolve_scene_file(cfg.scene_file)
    if not path.is_file():
        raise FileNotFoundError(f"scene_file: no scene YAML at {cfg.scene_file} (looked in {Path.cwd()}, "
                                f"{REPO_ROOT} and the package's own configs); set scene_file= to an "
                                "existing file or '' for the env's embedded default scene")
    # The env package's own reader, so the env reads a file and this dict alike; imported here
    # because importing sim2real_envs loads pybullet, which only rendering needs.
    from sim2real_envs.config import SceneConfigError, read_scene_file

    try:
        scene = read_scene_file(path, cfg.scene)
    except SceneConfigError as e:  # a key of this config, like the other config errors
        raise ConfigError("scene_file", e.expected, e.got, source=str(path)) from None
    objects = scene.get("objects", None)
    if objects is not None and not objects:
        raise ConfigError("scene.objects", "at least one object to render", objects, source=str(path))
    return scene


def frame_seed(seed: int, frame: int) -> int:
    """Seed of frame ``frame`` (its view): a function of (seed, frame) only, well mixed (SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(frame)]).generate_state(1, np.uint32)[0])


def scene_seed(seed: int, scene: int) -> int:
    """Seed of scene group ``scene``: a function of (seed, scene) only, independent of frame seeds."""
    words = np.random.SeedSequence([int(seed), int(scene)], spawn_key=(1,)).generate_state(2, np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


def num_scenes(num_frames: int, views_per_scene: int = 1) -> int:
    return -(-int(num_frames) // int(views_per_scene))


def scene_frames(scene: int, num_frames: int, views_per_scene: int = 1) -> list[int]:
    """Frames of scene group ``scene``: ``scene * V ... scene * V + V - 1`` (the last group may be short)."""
    return list(range(scene * views_per_scene, min((scene + 1) * views_per_scene, num_frames)))


def shard_frames(num_frames: int, shard: int = 0, num_shards: int = 1, views_per_scene: int = 1) -> list[int]:
    """Strided sharding over scene groups: shard k owns the frames of scenes k, k + n, k + 2n, ..."""
    return [f for g in range(shard, num_scenes(num_frames, views_per_scene), num_shards)
            for f in scene_frames(g, num_frames, views_per_scene)]


def fingerprint(cfg: GenerateConfig, scene: dict | None) -> dict:
    """Everything that decides the bytes of the dataset (the scene by content, not by file name)."""
    d = to_dict(cfg)
    fp = {k: v for k, v in d.items() if k not in _NOT_HASHED}
    # base_dir is where this checkout keeps the assets; the same files elsewhere are the same data.
    fp["scene"] = {k: v for k, v in scene.items() if k != "base_dir"} if scene else scene
    fp["label_version"] = cw.LABEL_VERSION
    fp["renderer_versions"] = _renderer_versions()
    return fp


def _renderer_versions() -> dict[str, str | None]:
    """Packages whose upgrade can change rendered bytes: resuming or merging across them would mix."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("pybullet", "albumentations", "opencv-python-headless"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hash_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def dataset_hash(fp: dict) -> str:
    """Hash shared by all shards of one dataset (shard index and count left out)."""
    return hash_of({k: v for k, v in fp.items() if k not in _SHARD_KEYS})


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k, "<unset>"), new.get(k, "<unset>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


# --------------------------------------------------------------------------------------------
# Rendering (runs in the main process for workers=1, in spawned workers otherwise)


@dataclass
class RenderJob:
    out: str
    env_id: str
    scene: dict | None
    renderer: str
    seed: int
    views_per_scene: int
    image_format: str
    jpeg_quality: int
    png_compression: int


def make_env(env_id: str, scene: dict | None, renderer: str = "tiny"):
    import gymnasium

    # The env checker only re-validates spaces on every step; it costs time per frame.
    return gymnasium.make(env_id, scene=scene, render_mode="rgb_array", renderer=renderer,
                          disable_env_checker=True)


class FrameRenderer:
    """One env, many frames: ``render(i)`` writes frame ``i`` and returns its label.

    Consecutive frames of one scene group reuse the env's scene (the env checks the scene seed).
    """

    def __init__(self, job: RenderJob):
        self.job = job
        self.env = make_env(job.env_id, job.scene, job.renderer)

    def render(self, frame: int) -> dict:
        job = self.job
        s = frame_seed(job.seed, frame)
        scene, view = divmod(frame, job.views_per_scene)
        obs, info = self.env.reset(seed=s, options={"scene_seed": scene_seed(job.seed, scene)})
        if "labels" not in info:
            raise ValueError(f"env {job.env_id} returned no info['labels'] from reset "
                             "(docs/contracts.md); cannot label frames")
        return cw.write_frame(job.out, frame, s, obs, info["labels"], image_format=job.image_format,
                              jpeg_quality=job.jpeg_quality, png_compression=job.png_compression,
                              scene=scene, view=view)

    def close(self) -> None:
        self.env.close()


_WORKER: dict[str, Any] = {}


def _worker_init(job: RenderJob) -> None:
    # No env here: a failing initializer makes multiprocessing.Pool respawn workers forever.
    import cv2

    cv2.setNumThreads(1)
    _WORKER["job"] = job


_EXPECTED_ERRORS = (ValueError, OSError)  # bad scene/config, missing files, disk full


def _error_payload(e: BaseException) -> tuple:
    if not isinstance(e, _EXPECTED_ERRORS):
        traceback.print_exc()  # a bug, not bad input: keep the worker's traceback visible
    return ("error", type(e).__name__, str(e), getattr(e, "errno", None))


def _worker_render(frames: list[int]) -> tuple:
    try:
        if "renderer" not in _WORKER:
            _WORKER["renderer"] = FrameRenderer(_WORKER["job"])
        r = _WORKER["renderer"]
        done = []
        for f in frames:
            lab = r.render(f)
            done.append((f, len(lab["objects"]), time.perf_counter(), time.process_time(), os.getpid()))
        return ("ok", done)
    except Exception as e:  # sent back as text: env exception classes may not unpickle here
        return _error_payload(e)


def _raise_payload(payload: tuple) -> None:
    _, kind, msg, err = payload
    if kind == "FileNotFoundError":
        raise FileNotFoundError(msg)
    if kind in ("OutputError", "ConfigError", "ResumeError"):
        raise (OutputError(err, msg) if kind == "OutputError" else ValueError(msg))
    if err is not None:
        raise OutputError(err, msg)
    raise ValueError(f"rendering failed ({kind}): {msg}")


def _chunks(frames: list[int], size: int, views_per_scene: int) -> list[list[int]]:
    """Tasks of at least ``size`` frames made of whole scene groups (a scene is built once)."""
    tasks: list[list[int]] = []
    current: list[int] = []
    for f in frames:
        if current and len(current) >= size and f // views_per_scene != current[-1] // views_per_scene:
            tasks.append(current)
            current = []
        current.append(f)
    return tasks + ([current] if current else [])


def _render_in_process(job: RenderJob, frames: list[int]) -> Iterator[tuple[int, int, float, float, int]]:
    renderer = None
    try:
        try:
            renderer = FrameRenderer(job)
            for f in frames:
                lab = renderer.render(f)
                yield f, len(lab["objects"]), time.perf_counter(), time.process_time(), 0
        except (ConfigError, OutputError, FileNotFoundError, ValueError):
            raise
        except Exception as e:  # same errors as with a worker pool, whatever the worker count
            _raise_payload(_error_payload(e))
    finally:
        if renderer is not None:
            renderer.close()


def _render_in_pool(job: RenderJob, frames: list[int], workers: int, chunksize: int
                    ) -> Iterator[tuple[int, int, float, float, int]]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init, initargs=(job,)) as pool:
        for payload in pool.imap_unordered(_worker_render, _chunks(frames, chunksize, job.views_per_scene)):
            if payload[0] != "ok":
                pool.terminate()
                _raise_payload(payload)
            yield from payload[1]


# --------------------------------------------------------------------------------------------
# Output folder: lock, state, finalisation


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Refuse two generators writing one folder; the OS drops the lock if this process dies."""
    fh = open(out / cw.LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(errno.EBUSY, f"another sim2real generate is writing to {out}; wait for it "
                                           "or pick another --out") from None
        yield
    finally:
        fh.close()


def _check_state(out: Path, fp: dict, cfg: GenerateConfig, scene: dict | None) -> None:
    """Create ``generate_state.json`` or prove the folder was made by the same config."""
    path = out / STATE_FILE
    state = {"state_version": STATE_VERSION, "config_hash": hash_of(fp), "dataset_hash": dataset_hash(fp),
             "shard": cfg.shard, "num_shards": cfg.num_shards, "num_frames": cfg.num_frames, "fingerprint": fp,
             "config": to_dict(cfg), "scene": scene}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ResumeError(f"{path} is corrupt; delete the folder {out} or pick another --out") from None
        if old.get("config_hash") != state["config_hash"]:
            changes = _diff(old.get("fingerprint", {}), fp)
            raise ResumeError(
                f"{out} holds a dataset made with a different config, so resuming would mix two datasets. "
                f"Changed: {'; '.join(changes[:8]) or 'label format'}. Re-run with the original config, "
                "pick another --out, or delete the folder.")
        return
    stray = [d for d in cw.FRAME_DIRS if (out / d).is_dir() and any((out / d).iterdir())]
    if stray:
        raise ResumeError(f"{out} already has frame files ({', '.join(stray)}/) but no {STATE_FILE}, so it "
                          "cannot be resumed safely; pick another --out or delete the folder")
    atomic_write_json(path, state, indent=2)


def coco_info(fp: dict, shard: int, num_shards: int) -> dict:
    return {"description": "sim2real synthetic dataset", "dataset_hash": dataset_hash(fp), "seed": fp["seed"],
            "num_frames": fp["num_frames"], "env_id": fp["env_id"], "shard": shard, "num_shards": num_shards,
            "depth_scale_m": cw.DEPTH_SCALE_M, "depth_units": "uint16 PNG, millimetres, 0 = no surface",
            "mask_units": "uint16 PNG, instance ids (annotations[].instance_id), 0 = background"}


def finalize(out: Path, cfg: GenerateConfig, scene: dict | None, frames: list[int], fp: dict,
             extra: dict | None = None) -> dict:
    """annotations.json, manifest.json, config.yaml and samples.png from the committed frames."""
    from sim2real.data.grid import draw_grid
    from sim2real.runinfo import git_commit, package_versions

    labels = cw.load_labels(out, frames)
    coco = cw.build_coco(labels, coco_info(fp, cfg.shard, cfg.num_shards))
    cw.write_coco(out, coco)
    save_config(cfg, out / "config.yaml")
    counts = cw.dataset_counts(coco)
    manifest = {
        "config": to_dict(cfg), "scene": scene, "seed": cfg.seed,
        "config_hash": hash_of(fp), "dataset_hash": dataset_hash(fp),
        "sharding": {"shard": cfg.shard, "num_shards": cfg.num_shards,
                     "rule": "strided over scenes: frame i belongs to shard (i // views_per_scene) % num_shards"},
        "views_per_scene": cfg.views_per_scene,
        "frame_seed": "numpy SeedSequence([seed, frame]).generate_state(1, uint32)[0] -> env.reset(seed=...)",
        "scene_seed": "numpy SeedSequence([seed, frame // views_per_scene], spawn_key=(1,)).generate_state(2, uint32) "
                      "as one uint64 (low word first) -> env.reset(options={'scene_seed': ...})",
        "counts": counts, "classes": [c["name"] for c in coco["categories"]],
        "files": {"images": f"images/NNNNNN.{cfg.image_format}", "depth": "depth/NNNNNN.png",
                  "masks": "masks/NNNNNN.png", "labels": "labels/NNNNNN.json", "annotations": "annotations.json"},
        "versions": package_versions(), "git_commit": git_commit(), **(extra or {}),
    }
    if cfg.format == "bop":
        from sim2real.data.bop import export_bop

        # Rebuilt from annotations.json on every (resumed) run, so it always matches the dataset.
        manifest["bop"] = export_bop(out, out / BOP_DIR, overwrite=True)
    atomic_write_json(out / "manifest.json", manifest, indent=2)
    if cfg.grid.enabled:
        draw_grid(out, coco, out / "samples.png", cfg.grid.num, cfg.grid.cols, cfg.grid.cell_width)
    state_path = out / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        state["complete"] = True
        atomic_write_json(state_path, state, indent=2)
    return manifest


# --------------------------------------------------------------------------------------------


def generate(cfg: GenerateConfig) -> dict:
    """Render (or finish rendering) the dataset ``cfg`` describes. Returns the manifest."""
    from tqdm import tqdm

    scene = load_scene(cfg)
    # Validate the scene the way each worker's env will, before anything is written: a rejected
    # key must leave no generate_state.json that would refuse the corrected re-run.
    from sim2real_envs.config import load_scene as validate_scene

    validate_scene(scene)
    out = check_writable(cfg.out)
    fp = fingerprint(cfg, scene)
    with _folder_lock(out):
        _check_state(out, fp, cfg, scene)
        cw.remove_temp_files(out)
        frames = shard_frames(cfg.num_frames, cfg.shard, cfg.num_shards, cfg.views_per_scene)
        # Hash-checked: frame files are not fsync-ed, so a power cut may have torn some.
        done = cw.committed_frames(out, verify=True, frames=frames)
        todo = [f for f in frames if f not in done]
        job = RenderJob(str(out), cfg.env_id, scene, cfg.renderer, cfg.seed, cfg.views_per_scene,
                        cfg.image_format, cfg.jpeg_quality, cfg.png_compression)
        workers = max(1, min(cfg.workers, len({f // cfg.views_per_scene for f in todo})))
        stamps: list[tuple[float, float, int]] = []  # per frame: wall clock, worker CPU clock, worker
        t0 = time.perf_counter()
        if todo:
            it = (_render_in_process(job, todo) if workers == 1
                  else _render_in_pool(job, todo, workers, cfg.chunksize))
            with tqdm(total=len(frames), initial=len(done), unit="frame", disable=not cfg.progress,
                      desc=f"generate {out.name}", dynamic_ncols=True) as bar:
                for _frame, _n, t, cpu, worker in it:
                    stamps.append((t, cpu, worker))
                    bar.update(1)
            os.sync()  # once, instead of an fsync per file: the dataset is durable when indexed
        elapsed = time.perf_counter() - t0
        steady, steady_cpu, warmup = _steady_rate(stamps, t0, cfg.views_per_scene)
        timing = {"rendered_now": len(todo), "resumed_frames": len(done), "workers": workers,
                  "elapsed_s": round(elapsed, 3),
                  "frames_per_s": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
                  "steady_frames_per_s": steady, "steady_frames_per_cpu_s": steady_cpu, "warmup_s": warmup}
        return finalize(out, cfg, scene, frames, fp, {"run": timing})


def _steady_rate(stamps: list[tuple[float, float, int]], t0: float, views_per_scene: int
                 ) -> tuple[float | None, float | None, float | None]:
    """(steady frames/s, frames per worker CPU second, warm-up s) from per-frame stamps.

    Warm-up = until every worker finished its first scene group (process start, imports, env
    and first scene).  Steady rate = the sum over workers of frames / wall time after that, so it
    counts whole groups (scene builds included) and leaves out start-up and the idle tail.  The
    CPU figure is the workers' mean frames per second of their own CPU time over the same frames:
    what one core would give, whatever else the machine is running.
    """
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for t, cpu, w in stamps:
        by_worker.setdefault(w, []).append((t, cpu))
    if not by_worker:
        return None, None, None
    rate, cpu_rates, warm = 0.0, [], 0.0
    for ts in by_worker.values():
        ts.sort()
        first = min(views_per_scene, len(ts)) - 1  # the end of its first group
        warm = max(warm, ts[first][0] - t0)
        n = len(ts) - 1 - first
        if n < 1 or ts[-1][0] <= ts[first][0] or ts[-1][1] <= ts[first][1]:
            return None, None, round(warm, 3)
        rate += n / (ts[-1][0] - ts[first][0])
        cpu_rates.append(n / (ts[-1][1] - ts[first][1]))
    return round(rate, 3), round(sum(cpu_rates) / len(cpu_rates), 3), round(warm, 3)
