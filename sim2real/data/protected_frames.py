"""Evaluation-only frames: the registry the footage readers check, and the sequences that have some.

This sits below both the readers (:mod:`sim2real.data.real_footage`) and the sequence modules
(:mod:`sim2real.data.real_visp`, which builds on the readers), so a reader can always check the
known sequences without importing a module that imports it back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

VISP_CUBE_SUBDIR = "mbt/cube"
VISP_CUBE_EVAL_FRAMES = range(100, 218)

#: folder (resolved) -> frame indices that are evaluation-only and must never feed
#: training, adaptation or tuning.
PROTECTED_FRAMES: dict[Path, range] = {}


def visp_image_root() -> Path:
    return Path(os.environ.get("SIM2REAL_VISP_ROOT", "/usr/share/visp-images-data/ViSP-images"))


def visp_cube_dir() -> Path:
    return visp_image_root() / VISP_CUBE_SUBDIR


def register_protected_frames() -> None:
    """Make frame readers refuse the evaluation frames (re-run if SIM2REAL_VISP_ROOT changes)."""
    try:
        PROTECTED_FRAMES[visp_cube_dir().resolve()] = VISP_CUBE_EVAL_FRAMES
    except OSError:
        pass


register_protected_frames()


def frame_index(path: str | Path) -> int | None:
    """The frame index of an image file: the last number in its stem (``image0042.pgm`` -> 42),
    as :class:`sim2real.data.real_footage.FrameFolderFootage` numbers frames; ``None`` without one."""
    numbers = re.findall(r"\d+", Path(path).stem)
    return int(numbers[-1]) if numbers else None


def protected_range(path: str | Path) -> range | None:
    """The evaluation-only frame range ``path`` falls in, judged on the RESOLVED path (symlinks and
    ``..`` resolved, so another name for a protected frame is still that frame), else ``None``."""
    register_protected_frames()
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    prot = PROTECTED_FRAMES.get(real.parent)
    if prot is None:
        return None
    index = frame_index(real)
    return prot if index is not None and index in prot else None
