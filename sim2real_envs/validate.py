"""A small dict -> dataclass validator (sim2real_envs/ must not import sim2real).

Fields may carry metadata: ``range=(lo, hi)`` (checked for numbers and every element of number
lists), ``choices=(...)``, ``key="yaml-name"`` (when the YAML key is not a Python identifier,
e.g. ``class``) and ``pair=True`` (a ``[lo, hi]`` range; a bare number ``v`` means ``[v, v]``).
"""

from __future__ import annotations

import dataclasses
import math
import difflib
import types
import typing
from typing import Any


class SceneConfigError(ValueError):
    """A scene config value is unknown, missing, of the wrong type or out of range."""

    def __init__(self, key: str, expected: str, got: Any = None):
        self.key, self.expected, self.got = key, expected, got
        got_txt = "" if got is None else f", got {got!r}"
        super().__init__(f"scene config key '{key}': expected {expected}{got_txt}")


def yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"a list of {_type_name(arg)}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _check_range(key: str, value: Any, meta: dict) -> None:
    if "range" not in meta:
        return
    lo, hi = meta["range"]
    vals = value if isinstance(value, list) else [value]
    for v in vals:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                lo_t = "-inf" if lo is None else lo
                hi_t = "inf" if hi is None else hi
                raise SceneConfigError(key, f"a value in [{lo_t}, {hi_t}]", value)


def _convert(key: str, tp: Any, value: Any, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(key, a, value, meta)
            except SceneConfigError as e:
                if e.key != key:  # a nested error is more precise than "wrong type"
                    raise
                errors.append(e)
        if len(errors) == 1:  # Optional[X]: X's own message ("a finite number") says more than the union's
            raise errors[0]
        raise SceneConfigError(key, _type_name(tp), value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is list:
        (arg,) = typing.get_args(tp)
        if meta.get("pair") and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, (list, tuple)):
            raise SceneConfigError(key, _type_name(tp), value)
        out = [_convert(f"{key}[{i}]", arg, v, {}) for i, v in enumerate(value)]
        if meta.get("pair"):
            if len(out) != 2 or out[0] > out[1]:
                raise SceneConfigError(key, "a range [lo, hi] with lo <= hi (or one number)", value)
        if "length" in meta and len(out) != meta["length"]:
            raise SceneConfigError(key, f"a list of {meta['length']} values", value)
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise SceneConfigError(key, "true/false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SceneConfigError(key, "an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SceneConfigError(key, "a number", value)
        if not math.isfinite(value):  # NaN would pass every range check silently
            raise SceneConfigError(key, "a finite number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SceneConfigError(key, "a string", value)
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported field type {tp!r} at {key}")


def from_dict(cls: type, data: Any, prefix: str = "scene") -> Any:
    """Build dataclass ``cls`` from ``data``; every error names the dotted key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SceneConfigError(prefix, "a mapping of key: value", data)
    hints = typing.get_type_hints(cls)
    fields = {yaml_key(f): f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise SceneConfigError(f"{prefix}.{k}", f"one of the known keys{hint}: "
                                   f"{', '.join(sorted(fields))}")
    kwargs = {}
    for k, f in fields.items():
        key = f"{prefix}.{k}"
        if k in data:
            value = _convert(key, hints[f.name], data[k], dict(f.metadata))
            _check_range(key, value, f.metadata)
            choices = f.metadata.get("choices")
            if choices is not None and value is not None:
                for v in value if isinstance(value, list) else [value]:
                    if v not in choices:
                        raise SceneConfigError(key, f"one of {list(choices)}", v)
            kwargs[f.name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SceneConfigError(key, f"a value ({_type_name(hints[f.name])}); it is required")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict with YAML key names (round-trips through ``from_dict``)."""
    if dataclasses.is_dataclass(obj):
        return {yaml_key(f): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj
