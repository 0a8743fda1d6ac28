"""Where this checkout lives, and where the default configs are.

From a checkout (or an editable install) files beside the package (``configs/``, ``shared/``
labels) are found from any working folder through ``REPO_ROOT``. A wheel (``pip install .``) has
no checkout: it carries the repository's ``configs/`` folder inside the package as
``sim2real/_configs`` (mapped there at build time by ``setup.py``; ``configs/`` stays the one copy
in git), and :func:`bundled_config` finds a default such as ``configs/generate.yaml`` in either.
Bottom layer (with io/config): imports nothing from sim2real.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

#: The repository root: the folder holding ``sim2real/``, ``sim2real_envs/`` and ``configs/``
#: (after a wheel install: the site-packages folder, which holds none of the checkout's files).
REPO_ROOT = PACKAGE_DIR.parent

#: The default configs: ``sim2real/_configs`` inside an installed wheel, else the checkout's ``configs/``.
CONFIGS_DIR = PACKAGE_DIR / "_configs" if (PACKAGE_DIR / "_configs").is_dir() else REPO_ROOT / "configs"

#: How commands, configs and the README name the default configs (``configs/scenes/default.yaml``).
CONFIGS_PREFIX = "configs/"


def bundled_config(path: str | Path) -> Path | None:
    """The shipped default config a relative ``configs/...`` path names, or None if there is none."""
    p = Path(path).as_posix()
    if not p.startswith(CONFIGS_PREFIX):
        return None
    candidate = CONFIGS_DIR / p[len(CONFIGS_PREFIX):]
    return candidate if candidate.is_file() else None
