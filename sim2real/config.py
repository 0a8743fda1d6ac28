"""One dataclass config per stage, loaded from YAML with ``key=value`` overrides.

Every stage declares a dataclass; fields may carry validation metadata::

    @dataclass
    class GenerateConfig:
        num_frames: int = field(default=64, metadata=rng(1, None))
        image_format: str = field(default="png", metadata=choice("png", "jpg"))

``load_config(GenerateConfig, "configs/generate.yaml", ["num_frames=8"])`` merges, in order,
the dataclass defaults, the YAML file and the dotted overrides (OmegaConf), then checks types,
ranges and choices.  Every failure is a :class:`ConfigError` naming the key, the file and what
was expected.  ``save_config`` writes the resolved config next to an output (atomically).
"""

from __future__ import annotations

import dataclasses
import math
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim2real.io import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, key: str, expected: str, got: Any = None, source: str | None = None):
        self.key, self.expected, self.got, self.source = key, expected, got, source
        where = f"{source}: " if source else ""
        got_txt = "" if got is None else f", got {got!r}"
        super().__init__(f"{where}config key '{key}': expected {expected}{got_txt}")

    def __reduce__(self):
        # Keep the four fields through pickling (errors cross process boundaries in worker pools).
        return (type(self), (self.key, self.expected, self.got, self.source))


def rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    """Field metadata: value (or every element of a list value) must lie in [lo, hi]."""
    return {"range": (lo, hi, lo_open)}


def choice(*options: Any) -> dict:
    """Field metadata: value must be one of ``options``."""
    return {"choices": options}


def _source_label(path: str | Path | None, overrides: Sequence[str]) -> str:
    parts = []
    if path:
        parts.append(str(path))
    if overrides:
        parts.append("command-line overrides")
    return " + ".join(parts) or "defaults"


def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("<file>", f"an existing YAML file at {p}", source=str(p))
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError("<file>", f"valid YAML ({e})", source=str(p)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", "a mapping of key: value", type(data).__name__, source=str(p))
    return data


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise ConfigError(o, "an override of the form key=value (dotted keys for nesting)",
                              source="command-line overrides")
    for o in overrides:  # one at a time, so a bad value is reported under its own key
        key, _, value = o.partition("=")
        try:
            OmegaConf.from_dotlist([o])
        except yaml.YAMLError as e:
            # Values are read as YAML scalars/lists/maps; tags such as !!python/... are never constructed.
            what = str(e).splitlines()[0]
            raise ConfigError(key, f"a plain YAML value: a number, string, [list] or {{map}} ({what})", value,
                              source="command-line overrides") from None
        except OmegaConfBaseException as e:
            raise ConfigError(key, f"a valid override ({e.msg if hasattr(e, 'msg') else e})", value,
                              source="command-line overrides") from None
    return OmegaConf.from_dotlist(list(overrides))


def _field_names(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _schema_at(schema: type | None, parts: Sequence[str]) -> type | None:
    """The dataclass reached by following ``parts`` from ``schema`` (None past a plain dict)."""
    for part in parts:
        if schema is None or not dataclasses.is_dataclass(schema):
            return None
        schema = _unwrap_optional(typing.get_type_hints(schema).get(part))
    return schema if dataclasses.is_dataclass(schema) else None


def _unwrap_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _type_words(tp: Any) -> str:
    tp = _unwrap_optional(tp)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(_field_names(tp))}"
    origin = typing.get_origin(tp) or tp
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _find_mismatch(schema: type, layer: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """First key of ``layer`` whose value cannot fill a nested-dataclass field: (key, type, value).

    OmegaConf reports this case ("int is not a subclass of Grid") without naming the key.
    """
    if not isinstance(layer, (dict, DictConfig)) or not dataclasses.is_dataclass(schema):
        return None
    hints = typing.get_type_hints(schema)
    for k, v in layer.items():
        tp = _unwrap_optional(hints.get(k))
        if dataclasses.is_dataclass(tp):
            if v is not None and not isinstance(v, (dict, DictConfig)):
                return prefix + str(k), tp, v
            found = _find_mismatch(tp, v, f"{prefix}{k}.")
            if found:
                return found
    return None


def _reformat(e: OmegaConfBaseException, schema: type, source: str, layer: Any = None) -> ConfigError:
    key = str(getattr(e, "full_key", None) or getattr(e, "key", None) or "")
    msg = str(getattr(e, "msg", None) or e).splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        parts = key.split(".")
        parent_schema = _schema_at(schema, parts[:-1])
        known = _field_names(parent_schema) if parent_schema else []
        close = difflib.get_close_matches(parts[-1], known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return ConfigError(key, f"a known key{hint}; known keys: {', '.join(known)}", source=source)
    if not key:
        found = _find_mismatch(schema, layer)
        if found:
            bad_key, tp, value = found
            return ConfigError(bad_key, _type_words(tp), value, source=source)
        return ConfigError("?", msg, source=source)
    value = getattr(e, "value", None)
    parts = key.split(".")
    parent_schema = _schema_at(schema, parts[:-1])
    if any(t in msg for t in ("could not be converted", "Cannot assign", "Unsupported value type", "Invalid value assigned")):
        if parent_schema is not None and parts[-1] in typing.get_type_hints(parent_schema):
            return ConfigError(key, _type_words(typing.get_type_hints(parent_schema)[parts[-1]]), value,
                               source=source)
    return ConfigError(key, msg, value, source=source)


def _check_finite(value: Any, key: str, source: str) -> None:
    """NaN and +-inf are never meaningful settings (``lr=nan`` would train to no result without a
    word): refuse them anywhere in a config, lists and free-form maps included."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, "a finite number", value, source=source)
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}", source)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]", source)


def _check_metadata(obj: Any, prefix: str, source: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_metadata(value, key + ".", source)
            continue
        _check_finite(value, key, source)
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(key, f"one of {list(meta['choices'])}", value, source=source)
        if "range" in meta and value is not None:
            lo, hi, lo_open = meta["range"]
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                bad = (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi)
                if bad:
                    lo_txt = "-inf" if lo is None else lo
                    hi_txt = "inf" if hi is None else hi
                    br = "(" if lo_open else "["
                    raise ConfigError(key, f"a value in {br}{lo_txt}, {hi_txt}]", value, source=source)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(prefix + e.key, e.expected, e.got, source=source) from None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults <- YAML file <- ``key=value`` overrides, validated into an instance of ``schema``."""
    source = _source_label(path, overrides)
    base = OmegaConf.structured(schema)
    layers = []
    if path:
        layers.append((str(path), _read_yaml(path)))
    if overrides:
        layers.append(("command-line overrides", _parse_overrides(overrides)))
    merged = base
    for label, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as e:
            raise _reformat(e, schema, label, layer) from None
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise _reformat(e, schema, source) from None
    _check_metadata(obj, "", source)
    return obj  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict:
    """Plain-python dict of a config dataclass (or DictConfig)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomic), so a run folder can be re-run as is."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    return atomic_write_text(path, text)
