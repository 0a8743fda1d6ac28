"""``pip install .`` (NOT editable) into a fresh venv, then the CLI from an empty folder outside the checkout.

What a user gets from a wheel: ``sim2real generate`` with no ``--config`` must find its default
config and scene inside the installed package (``sim2real/_configs``, shipped by ``setup.py``), render
through the env module ``sim2real_envs`` (never the generic top-level ``envs``), and ``sim2real train``
must train one epoch on what it wrote.

Offline and fast: the new venv has no packages of its own except the one installed here; a ``.pth``
file puts the test interpreter's site-packages folders on its ``sys.path`` as plain paths (torch,
pybullet, setuptools, pip ...). Plain paths, not ``site.addsitedir``: ``.pth`` files in those folders
(the checkout's editable-install finder among them) are NOT run, so the checkout's ``sim2real`` cannot
leak in. (``venv --system-site-packages`` would not do: made from a venv's interpreter it sees the
base interpreter's packages, not the venv's.) The build runs on a copy of the checkout in tmp, with
``--no-deps --no-build-isolation --no-index`` (setuptools from the test interpreter, no network).
A trap module ``envs`` (raises on import) sits on PYTHONPATH while the CLI runs.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# What the build reads (pyproject's readme included); nothing else of the checkout goes along.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "sim2real", "sim2real_envs", "configs")
TIMEOUT = 600


def _run(cmd, cwd, env, timeout=TIMEOUT) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _base_site_dirs() -> list[str]:
    dirs = list(site.getsitepackages()) + [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


def make_venv(root: Path) -> tuple[Path, Path]:
    """A fresh venv (python, its site-packages) seeing the test interpreter's packages as plain paths."""
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    _run([base_python, "-m", "venv", "--without-pip", str(root)], cwd=root.parent, env=dict(os.environ))
    python = root / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "zz_test_interpreter_packages.pth").write_text("\n".join(_base_site_dirs()) + "\n")
    return python, purelib


def clean_env(tmp: Path, trap: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update(PYTHONPATH=str(trap), PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", WANDB_MODE="offline",
               SIM2REAL_CACHE=str(tmp / "feature_cache"), MPLBACKEND="Agg", PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def test_wheel_install_runs_generate_and_train_from_an_empty_folder(tmp_path):
    t0 = time.perf_counter()
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(p, src / name)
    trap = tmp_path / "trap"
    (trap / "envs").mkdir(parents=True)
    (trap / "envs" / "__init__.py").write_text(
        "raise ImportError('the installed sim2real imported the generic top-level module envs')\n")
    env = clean_env(tmp_path, trap)
    python, purelib = make_venv(tmp_path / "venv")

    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src)],
         cwd=tmp_path, env=env)
    t_install = time.perf_counter() - t0

    work = tmp_path / "empty"  # outside the checkout: nothing of it on sys.path, no configs/ here
    work.mkdir()
    probe = ("import json, sim2real, sim2real_envs, sim2real.paths as p; "
             "print(json.dumps([sim2real.__file__, sim2real_envs.__file__, str(p.CONFIGS_DIR)]))")
    where = json.loads(_run([python, "-c", probe], cwd=work, env=env))
    for f in where:
        assert Path(f).is_relative_to(purelib), f"{f} is not the installed copy in {purelib}"
    configs = Path(where[2])
    assert configs == purelib / "sim2real" / "_configs"
    # Every config of the checkout ships, byte for byte (configs/ is the one copy in git).
    shipped = sorted(p.relative_to(REPO / "configs") for p in (REPO / "configs").rglob("*.yaml"))
    assert shipped and all((configs / p).read_bytes() == (REPO / "configs" / p).read_bytes() for p in shipped)
    record = next(purelib.glob("sim2real-*.dist-info")).joinpath("RECORD").read_text()
    tops = {line.split("/", 1)[0] for line in record.splitlines()}
    assert "envs" not in tops and {"sim2real", "sim2real_envs"} <= tops, tops
    cli = [str(python.parent / "sim2real")]

    # generate: no --config, default scene_file (configs/scenes/default.yaml), from the empty folder
    _run(cli + ["generate", "--num-frames", "8", "--workers", "1", "--no-progress"], cwd=work, env=env)
    t_generate = time.perf_counter() - t0 - t_install
    data = work / "data" / "sim" / "tabletop"
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["counts"]["frames"] == 8
    assert manifest["config"]["env_id"].startswith("sim2real_envs:")
    assert manifest["config"]["scene_file"] == "configs/scenes/default.yaml"
    # Relative scene paths resolve next to the scene file that was read: the shipped one.
    assert Path(manifest["scene"]["base_dir"]) == configs / "scenes"

    # train: no --config (configs/train_sim.yaml shipped), one epoch on the frames just written
    _run(cli + ["train", "--no-progress", "epochs=1", "batch_size=4", "tracking.mode=disabled", "device=cpu"],
         cwd=work, env=env)
    t_train = time.perf_counter() - t0 - t_install - t_generate
    run = work / "runs" / "train" / "sim"
    assert (run / "best.pt").is_file() and (run / "metrics.jsonl").read_text().strip()
    print(f"wheel install {t_install:.1f} s, generate {t_generate:.1f} s, train {t_train:.1f} s")
