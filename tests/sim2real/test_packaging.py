"""Fast packaging checks: default configs resolve through ``sim2real.paths``, the simulation package
is ``sim2real_envs`` everywhere (never the generic top-level ``envs``), setup.py ships every package.
The wheel itself is built and run by ``tests/test_wheel_install.py`` (slow)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sim2real.commands._common import resolve_default_config
from sim2real.data.generate import GenerateConfig, canonical_env_id, resolve_scene_file
from sim2real.paths import CONFIGS_DIR, REPO_ROOT, bundled_config

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("sim2real", "sim2real_envs", "tests", "bench", "launch")


def test_default_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert CONFIGS_DIR == REPO_ROOT / "configs"  # a checkout: no sim2real/_configs folder
    assert bundled_config("configs/generate.yaml") == CONFIGS_DIR / "generate.yaml"
    assert bundled_config("configs/scenes/visp_cube.yaml") == CONFIGS_DIR / "scenes" / "visp_cube.yaml"
    assert bundled_config("configs/nope.yaml") is None and bundled_config("other/generate.yaml") is None
    assert resolve_default_config("configs/train_sim.yaml", "configs/train_sim.yaml") == str(CONFIGS_DIR / "train_sim.yaml")
    # Not the default: left alone (load_config names the missing file).
    assert resolve_default_config("configs/train_sim.yaml", "configs/other.yaml") == "configs/train_sim.yaml"
    assert resolve_scene_file("configs/scenes/default.yaml").is_file()
    # A file of the working folder wins over the shipped one.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "generate.yaml").write_text("num_frames: 3\n")
    assert resolve_default_config("configs/generate.yaml", "configs/generate.yaml") == "configs/generate.yaml"


def test_env_id_is_the_sim2real_envs_module():
    assert GenerateConfig().env_id.startswith("sim2real_envs:")
    assert canonical_env_id("envs:sim2real/Tabletop-v0") == "sim2real_envs:sim2real/Tabletop-v0"
    assert canonical_env_id("sim2real/Tabletop-v0") == "sim2real/Tabletop-v0"
    assert canonical_env_id("my_envs:x/Y-v0") == "my_envs:x/Y-v0"
    cfg = GenerateConfig(env_id="envs:sim2real/PandaTabletop-v0")
    cfg.validate()
    assert cfg.env_id == "sim2real_envs:sim2real/PandaTabletop-v0"


def _top_level_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_nothing_uses_the_generic_envs_module():
    """``import envs`` / ``from envs...`` / ``"envs:<id>"`` would only work from a checkout (or pick up
    PyPI's unrelated ``envs``): the installed module is ``sim2real_envs``."""
    files = [p for d in CODE_DIRS for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".sh", ".yaml")]
    files += list((ROOT / "configs").rglob("*.yaml"))
    bad = [f"{p.relative_to(ROOT)} imports envs" for p in files if p.suffix == ".py" and "envs" in _top_level_imports(p)]
    env_id = re.compile(r"""(?<![\w.])envs(:sim2real/|\.\w+:)""")
    bad += [f"{p.relative_to(ROOT)} names {m.group(0)!r}" for p in files if p.name != Path(__file__).name
            for m in env_id.finditer(p.read_text(errors="replace"))]
    assert not bad, "\n".join(bad)
    assert not (ROOT / "envs").exists(), "the simulation package's folder is sim2real_envs/"


def test_setup_py_ships_every_package_and_every_config():
    text = (ROOT / "setup.py").read_text()
    assert '"sim2real", "sim2real.*", "sim2real_envs", "sim2real_envs.*"' in text
    tree = ast.parse(text)
    mapping = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                   if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "CONFIG_PACKAGES")
    folders = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert folders <= set(mapping.values()), f"config folders not shipped by setup.py: {folders - set(mapping.values())}"
    # The simulation package needs no data files of its own (pybullet_data, scikit-image, embedded scene).
    data = [p for p in (ROOT / "sim2real_envs").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".md")]
    assert not data, f"sim2real_envs/ holds data files setup.py does not ship: {data}"
