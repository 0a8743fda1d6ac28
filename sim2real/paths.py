"""Where this checkout lives.

The package runs from its checkout (editable install), so files that ship beside it (``configs/``,
``shared/`` labels) can be found from any working folder. Bottom layer (with io/config): imports
nothing from sim2real.
"""

from __future__ import annotations

from pathlib import Path

#: The repository root: the folder holding ``sim2real/``, ``envs/`` and ``configs/``.
REPO_ROOT = Path(__file__).resolve().parents[1]
