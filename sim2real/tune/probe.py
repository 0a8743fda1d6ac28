"""Small rendered sets and their frozen-backbone features, cached: what every tune step measures.

A probe renders ``n`` frames of a scene dict in memory (no files) exactly as ``sim2real generate``
would with the same ``seed`` and ``views_per_scene`` (frame ``i`` = ``reset(seed=frame_seed(seed,
i), scene_seed(seed, i // V))``), so two probes with the same seed differ only where their scenes
differ. Each image goes through the model's preprocessing and the ImageNet backbone's pooled
last stage (``PerceptionModel.embed``, what ``gap/feat_*`` measures everywhere else). Features are
cached on disk under a key of everything they depend on (scene content, seeds, frame count,
renderer versions, backbone weights and preprocessing), so a repeated probe (a resumed search,
the attribution baseline reused by the search) costs a file read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2real.data.generate import (
    _renderer_versions,
    canonical_env_id,
    frame_seed,
    make_env,
    scene_seed,
)
from sim2real.features.cache import cache_key, default_cache_dir, frames_fingerprint
from sim2real.io import atomic_path

ENV_ID = "sim2real_envs:sim2real/Tabletop-v0"
CACHE_VERSION = 1


def scene_identity(scene: dict) -> dict:
    """The scene's content for cache keys (``base_dir`` only says where this checkout keeps assets)."""
    return {k: v for k, v in scene.items() if k != "base_dir"}


def render_images(scene: dict, n: int, seed: int, views_per_scene: int = 8, env_id: str = ENV_ID) -> list[np.ndarray]:
    """``n`` RGB frames of ``scene``, frame ``i`` as ``sim2real generate`` renders it with ``seed``."""
    scene = copy.deepcopy(scene)
    # Labels are not needed here; exact visibility costs extra crop renders and changes no pixel.
    scene.setdefault("labels", {})["visibility"] = False
    env = make_env(canonical_env_id(env_id), scene)
    try:
        out = []
        for i in range(n):
            obs, _ = env.reset(seed=frame_seed(seed, i), options={"scene_seed": scene_seed(seed, i // views_per_scene)})
            out.append(np.ascontiguousarray(obs["rgb"]))
        return out
    finally:
        env.close()


class Embedder:
    """The frozen ImageNet backbone at ``input_hw``: images -> ``(N, D)`` pooled features."""

    def __init__(self, backbone: str, input_hw: Sequence[int], device: str = "cpu", batch_size: int = 16):
        from sim2real.models import ModelConfig, build_model, resolve_device

        device = resolve_device(device)
        self.model = build_model(ModelConfig(backbone=backbone, input_hw=list(input_hw)), ["object"]).to(device).eval()
        self.preprocess = self.model.make_preprocess()
        self.device, self.batch_size = device, batch_size
        bb = self.model.backbone
        self.key = {"backbone": bb.name, "backbone_hash": bb.weights_hash, "preprocess": self.model.preprocess_cfg}

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        from sim2real.gap.compute import embed_batches

        batches = (torch.stack([self.preprocess(img)[0] for img in images[i:i + self.batch_size]]).to(self.device)
                   for i in range(0, len(images), self.batch_size))
        return embed_batches(self.model, batches).astype(np.float32)


class FeatureCache:
    """``<dir>/<key>.npy`` files, written atomically; ``dir`` defaults to the feature cache's ``tune/``."""

    def __init__(self, cache_dir: str | Path | None = None):
        self.dir = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "tune"
        self.hits = self.misses = 0

    def get_or_compute(self, parts: dict, compute) -> np.ndarray:
        path = self.dir / f"{cache_key({'version': CACHE_VERSION, **parts})}.npy"
        if path.is_file():
            try:
                arr = np.load(path, allow_pickle=False)
                self.hits += 1
                return arr
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a torn entry: recompute
        arr = compute()
        self.misses += 1
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        return arr


class Prober:
    """Cached features of rendered probes and of real frames, with one embedder and one cache."""

    def __init__(self, embedder: Embedder, cache: FeatureCache, env_id: str = ENV_ID, views_per_scene: int = 8):
        self.embedder, self.cache, self.env_id, self.views = embedder, cache, env_id, views_per_scene
        self.render_seconds = 0.0
        self.embed_seconds = 0.0

    def _embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.embedder(images)
        finally:
            self.embed_seconds += time.perf_counter() - t0

    def sim_features(self, scene: dict, n: int, seed: int) -> np.ndarray:
        parts = {"kind": "probe", "scene": scene_identity(scene), "n": n, "seed": seed, "views": self.views,
                 "env": self.env_id, "renderer": _renderer_versions(), **self.embedder.key}

        def compute() -> np.ndarray:
            t0 = time.perf_counter()
            images = render_images(scene, n, seed, self.views, self.env_id)
            self.render_seconds += time.perf_counter() - t0
            return self._embed(images)

        return self.cache.get_or_compute(parts, compute)

    def real_features(self, images: Sequence[np.ndarray], source_id: str) -> np.ndarray:
        parts = {"kind": "real", "frames": frames_fingerprint(images), "source": source_id, **self.embedder.key}
        return self.cache.get_or_compute(parts, lambda: self._embed(images))


def scene_hash(scene: dict) -> str:
    """Short content hash of a scene dict (for names and records)."""
    return hashlib.sha256(json.dumps(scene_identity(scene), sort_keys=True, default=str).encode()).hexdigest()[:12]


def describe_cache(prober: Prober) -> dict[str, Any]:
    return {"dir": str(prober.cache.dir), "hits": prober.cache.hits, "misses": prober.cache.misses,
            "render_seconds": round(prober.render_seconds, 2), "embed_seconds": round(prober.embed_seconds, 2)}
