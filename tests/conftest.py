"""Suite-wide rule: tests write only under their temporary folders, never into the checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Made by Python and pytest themselves, not by the code under test.
_TOOLING = ("__pycache__", ".pytest_cache", ".venv", ".egg-info")


def _untracked() -> set[str] | None:
    """Untracked and ignored paths of the checkout (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored"], cwd=REPO,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = {line[3:] for line in out.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(t in p for t in _TOOLING)}


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean():
    before = _untracked()
    yield
    after = _untracked()
    if before is not None and after is not None:
        new = sorted(after - before)
        assert not new, f"tests wrote into the checkout {REPO} (write under tmp_path instead): {new[:10]}"
