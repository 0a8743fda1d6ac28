"""The ViSP ``mbt/cube`` real sequence: where it lives and the rules for using it.

Frames 0-99 are the development range (labelled; k-shot sets, validation, unlabelled footage).
Frames 100-217 are evaluation footage: never training, adaptation or tuning, not even unlabelled.
Every reader here defaults to the development range, and the frame-folder reader refuses the
evaluation frames unless asked explicitly (``allow_eval=True``, for the final evaluation only).

Locations (override with environment variables):
- images: ``SIM2REAL_VISP_ROOT`` (default ``/usr/share/visp-images-data/ViSP-images``, Debian
  package ``visp-images-data``); labels ``file_name`` entries are relative to it.
- labels: ``SIM2REAL_VISP_LABELS``, else ``shared/real/visp_cube/dev_frames_000_099.coco.json``
  in the repository or next to it (``../shared``).
"""

from __future__ import annotations

import os
from pathlib import Path

# The sequence's location and evaluation frames live with the protected-frames registry (which
# the footage readers check); they are part of this module's interface too.
from sim2real.data.protected_frames import (VISP_CUBE_EVAL_FRAMES, VISP_CUBE_SUBDIR,  # noqa: F401
                                            visp_cube_dir, visp_image_root)
from sim2real.data.real import CocoSet, RealDataError, load_coco
from sim2real.data.real_footage import FrameFolderFootage
from sim2real.paths import REPO_ROOT

VISP_CUBE_DEV_FRAMES = range(0, 100)
VISP_CUBE_LABELS_NAME = "dev_frames_000_099.coco.json"
VISP_CUBE_CLASSES = ["cube"]
#: default splits of the 100 development frames (see sim2real.data.splits): pool 0-45, val 48-67,
#: test 70-99, 2 guard frames between segments.
VISP_CUBE_SPLIT_DEFAULTS = {"n_val": 20, "n_test": 30, "gap": 2}


def visp_cube_dev_frames() -> range:
    """Frames allowed for training, adaptation and tuning: 0-99."""
    return VISP_CUBE_DEV_FRAMES


def visp_cube_eval_frames() -> range:
    """Evaluation-only frames: 100-217."""
    return VISP_CUBE_EVAL_FRAMES


def visp_cube_labels_path() -> Path:
    env = os.environ.get("SIM2REAL_VISP_LABELS")
    if env:
        return Path(env)
    candidates = [REPO_ROOT / "shared" / "real" / "visp_cube" / VISP_CUBE_LABELS_NAME,
                  REPO_ROOT.parent / "shared" / "real" / "visp_cube" / VISP_CUBE_LABELS_NAME]
    for c in candidates:
        if c.is_file():
            return c
    raise RealDataError("ViSP cube labels not found; looked at " + ", ".join(str(c) for c in candidates)
                        + " (set SIM2REAL_VISP_LABELS to the labels file)")


def _require_images() -> Path:
    d = visp_cube_dir()
    if not d.is_dir():
        raise RealDataError(f"ViSP cube images not found at {d}: install the Debian package visp-images-data "
                            "or set SIM2REAL_VISP_ROOT to the folder holding mbt/cube")
    return d


def load_visp_cube_dev(labels: str | Path | None = None) -> CocoSet:
    """The labelled development frames (0-99) as a :class:`CocoSet`; any label outside 0-99 is an error."""
    _require_images()
    coco = load_coco(labels or visp_cube_labels_path(), visp_image_root())
    bad = [im.frame for im in coco if im.frame is None or im.frame not in VISP_CUBE_DEV_FRAMES]
    if bad:
        raise RealDataError(f"{coco.source}: frames {bad[:5]} are outside the development range 0-99; "
                            "frames 100-217 must never feed training, adaptation or tuning")
    return coco


def visp_cube_footage(frames=None, stride: int = 1, max_frames: int | None = None,
                      allow_eval: bool = False) -> FrameFolderFootage:
    """Unlabelled frames of the sequence; ``frames`` defaults to the development range 0-99.

    For adaptation pass the splits' unlabelled frames (``splits.frame_indices("unlabelled")``)
    so validation and test frames stay unseen.
    """
    return FrameFolderFootage(_require_images(), stride=stride,
                              frames=visp_cube_dev_frames() if frames is None else frames,
                              max_frames=max_frames, allow_protected=allow_eval)


def visp_cube_default_splits(k: int, seed: int = 0, labels: str | Path | None = None):
    """Default splits of the development frames (chronological, see ``VISP_CUBE_SPLIT_DEFAULTS``)."""
    from sim2real.data.splits import make_splits

    return make_splits(load_visp_cube_dev(labels), k=k, seed=seed, **VISP_CUBE_SPLIT_DEFAULTS)
