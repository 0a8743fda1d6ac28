"""Suite-wide rules: tests write only under their temporary folders, never into the checkout; tests that
read installed real footage carry ``@pytest.mark.needs_data(...)`` (skipped when missing, failed under CI)."""

from __future__ import annotations

import os
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


# --- Real footage from Debian packages ------------------------------------------------------------
# One rule for every test that reads it: mark the test (or module) ``@pytest.mark.needs_data("visp")``
# / ``("visp_labels")`` / ``("vtest")``. Missing data -> the test is skipped with the reason, except when
# ``CI`` is set: CI's setup installs the packages, so there a missing package fails the test.

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def _visp_images() -> str | None:
    from sim2real.data.real_visp import visp_cube_dir

    d = visp_cube_dir()
    if d.is_dir() and (d / "image0000.pgm").is_file():
        return None
    return f"ViSP cube footage not found at {d} (apt install visp-images-data, or set SIM2REAL_VISP_ROOT)"


def _visp_labels() -> str | None:
    from sim2real.data.real import RealDataError
    from sim2real.data.real_visp import visp_cube_labels_path

    try:
        labels = visp_cube_labels_path()
    except RealDataError as e:
        return str(e)
    if not labels.is_file():  # SIM2REAL_VISP_LABELS is taken as given
        return f"ViSP cube labels {labels} not found (SIM2REAL_VISP_LABELS)"
    return _visp_images()


def _vtest() -> str | None:
    return None if VTEST.is_file() else f"{VTEST} not found (apt install opencv-doc)"


DATA_CHECKS = {"visp": _visp_images, "visp_labels": _visp_labels, "vtest": _vtest}


def missing_data(*names: str) -> str | None:
    """Why the named data sets are unavailable, or None when all are installed."""
    for name in names:
        if name not in DATA_CHECKS:
            raise ValueError(f"unknown data set {name!r}; known: {sorted(DATA_CHECKS)}")
        why = DATA_CHECKS[name]()
        if why:
            return why
    return None


def require_data(*names: str) -> None:
    """Skip (or, under CI, fail) the calling test when a named data set is missing."""
    why = missing_data(*names)
    if why is None:
        return
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set but real data is missing: {why}", pytrace=False)
    pytest.skip(f"real data missing: {why}")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data(*names): the test reads installed real data "
                            f"({', '.join(sorted(DATA_CHECKS))}); skipped when missing, failed when CI is set")


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="needs_data"):
        require_data(*mark.args)


# --- A real tiny disk ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tmpfs_mountable() -> None:
    """Tests of a really full disk mount a few-KiB tmpfs in a private mount namespace (`unshare -m`,
    root); where that is not allowed they are skipped with that reason (simulated-full-disk tests still run)."""
    try:
        ok = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
                            capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        pytest.skip("needs `unshare -m` and mount (root) for a real tiny disk")
