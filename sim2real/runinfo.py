"""What every run folder records so it can be reproduced: config, seed, versions, git commit."""

from __future__ import annotations

import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.config import save_config, to_dict
from sim2real.io import atomic_write_json

_PACKAGES = ("sim2real", "torch", "torchvision", "numpy", "gymnasium", "pybullet", "albumentations",
             "opencv-python-headless", "timm", "onnxruntime", "wandb", "omegaconf")


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(cwd: str | Path | None = None) -> str | None:
    """Commit of the source tree this package runs from ("<sha>-dirty" with local edits)."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # sim2real_envs-only use
        pass


def write_run_info(run_dir: str | Path, cfg: Any, seed: int | None = None, **extra: Any) -> None:
    """Save ``config.yaml`` (resolved) and ``run_info.json`` (seed, versions, commit) in ``run_dir``."""
    run_dir = Path(run_dir)
    save_config(cfg, run_dir / "config.yaml")
    info = {"seed": seed, "versions": package_versions(), "git_commit": git_commit(),
            "command": sys.argv, "config": to_dict(cfg), **extra}
    atomic_write_json(run_dir / "run_info.json", info, indent=2)
