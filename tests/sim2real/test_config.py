"""sim2real.config: defaults <- YAML <- key=value overrides, with errors that name the key."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Optional

import pytest
import yaml

from sim2real.config import ConfigError, choice, load_config, rng, save_config, to_dict


@dataclass
class Optim:
    lr: float = field(default=1e-3, metadata=rng(0.0, 1.0, lo_open=True))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata=rng(0.0, 1.0))


@dataclass
class Schema:
    num_frames: int = field(default=8, metadata=rng(1, None))
    image_format: str = field(default="png", metadata=choice("png", "jpg"))
    name: str = "run"
    shard: Optional[int] = None
    scene: dict = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)
    warmup: int = 0

    def validate(self) -> None:
        if self.warmup > self.num_frames:
            raise ConfigError("warmup", f"at most num_frames = {self.num_frames}", self.warmup)


def _yaml(tmp_path, data, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_defaults_yaml_then_overrides_win(tmp_path):
    p = _yaml(tmp_path, {"num_frames": 4, "name": "from_yaml", "optim": {"lr": 0.5}})
    cfg = load_config(Schema, p, ["name=cli", "optim.betas=[0.5,0.6]", "scene.camera.width=128", "shard=1"])
    assert cfg.num_frames == 4 and cfg.name == "cli" and cfg.shard == 1
    assert cfg.optim.lr == 0.5 and cfg.optim.betas == [0.5, 0.6]
    assert cfg.scene == {"camera": {"width": 128}}  # free-form dict keys are accepted, typed
    assert isinstance(cfg.optim, Optim)


def test_unknown_key_names_key_and_suggests(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(Schema, None, ["num_frame=3"])
    msg = str(e.value)
    assert "'num_frame'" in msg and "did you mean num_frames" in msg and "command-line overrides" in msg
    p = _yaml(tmp_path, {"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as e:
        load_config(Schema, p)
    assert e.value.key == "optim.lrr" and "did you mean lr" in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("override, key, words", [
    ("num_frames=abc", "num_frames", "an integer"),
    ("num_frames=1.5", "num_frames", "an integer"),
    ("optim.lr=fast", "optim.lr", "a number"),
    ("shard=abc", "shard", "an integer"),
    ("scene=3", "scene", "a mapping"),
    ("tags=3", "tags", "a list"),
    ("optim=3", "optim", "a mapping with keys lr, betas"),  # OmegaConf names no key here
])
def test_wrong_type_names_key_and_expected_type(override, key, words):
    with pytest.raises(ConfigError) as e:
        load_config(Schema, None, [override])
    assert e.value.key == key
    assert f"expected {words}" in str(e.value)


@pytest.mark.parametrize("override, key, expected", [
    ("num_frames=0", "num_frames", "[1, inf]"),
    ("num_frames=-3", "num_frames", "[1, inf]"),
    ("optim.lr=0", "optim.lr", "(0.0, 1.0]"),
    ("optim.betas=[0.5,2]", "optim.betas", "[0.0, 1.0]"),
    ("image_format=gif", "image_format", "one of ['png', 'jpg']"),
])
def test_out_of_range_and_choices(override, key, expected):
    with pytest.raises(ConfigError) as e:
        load_config(Schema, None, [override])
    assert e.value.key == key and expected in str(e.value)


def test_validate_hook_error_names_key():
    with pytest.raises(ConfigError) as e:
        load_config(Schema, None, ["warmup=9"])
    assert e.value.key == "warmup" and "at most num_frames = 8" in str(e.value)


@pytest.mark.parametrize("override", ["num_frames", "=3", "num_frames:3"])
def test_bad_override_syntax(override):
    with pytest.raises(ConfigError) as e:
        load_config(Schema, None, [override])
    assert "key=value" in str(e.value)


def test_file_not_found_and_bad_yaml(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load_config(Schema, missing)
    assert str(missing) in str(e.value) and "existing YAML file" in str(e.value)
    bad = _yaml(tmp_path, "num_frames: [1, 2\n", "bad.yaml")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_config(Schema, bad)
    not_mapping = _yaml(tmp_path, "- 1\n- 2\n", "list.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Schema, not_mapping)


def test_empty_yaml_means_defaults(tmp_path):
    assert load_config(Schema, _yaml(tmp_path, "", "empty.yaml")) == Schema()


def test_saved_resolved_config_round_trips(tmp_path):
    cfg = load_config(Schema, None, ["num_frames=5", "scene.camera.width=64", "optim.betas=[0.1,0.2]",
                                     "tags=[a,b]"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text()) == to_dict(cfg)
    assert load_config(Schema, path) == cfg
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_config_error_survives_pickling():
    # Worker pools send exceptions across processes.
    e = pickle.loads(pickle.dumps(ConfigError("a.b", "an integer", "x", "f.yaml")))
    assert (e.key, e.expected, e.got, e.source) == ("a.b", "an integer", "x", "f.yaml")
    assert str(e) == "f.yaml: config key 'a.b': expected an integer, got 'x'"


@pytest.mark.parametrize("override, key", [
    ("optim.lr=nan", "optim.lr"), ("optim.lr=inf", "optim.lr"), ("optim.betas=[0.9, -.inf]", "optim.betas[1]"),
    ("scene={light: {gain: .nan}}", "scene.light.gain"), ("name=.nan", None)])
def test_non_finite_numbers_are_refused_everywhere(override, key):
    if key is None:  # a string field keeps the text: "nan" is a name, not a number
        assert isinstance(load_config(Schema, None, [override]).name, str)
        return
    with pytest.raises(ConfigError) as e:
        load_config(Schema, None, [override])
    assert e.value.key == key and "a finite number" in str(e.value)


@pytest.mark.parametrize("override", ["num_frames=!!python/object/apply:os.system [echo pwned]", "num_frames=[1,",
                                      "tags={a: [1, 2}"])
def test_override_that_is_not_plain_yaml_names_its_key(override):
    with pytest.raises(ConfigError) as e:
        load_config(Schema, None, [override])
    assert e.value.key == override.partition("=")[0] and "plain YAML value" in str(e.value)
    assert "\n" not in str(e.value)
