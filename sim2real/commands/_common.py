"""Argument helpers shared by commands that take a stage config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from sim2real.config import load_config
from sim2real.paths import bundled_config

T = TypeVar("T")


def add_config_arguments(p: argparse.ArgumentParser, default_config: str | None) -> None:
    p.add_argument("--config", default=default_config,
                   help=f"stage YAML config (default: {default_config or 'built-in defaults'})")
    p.set_defaults(_default_config=default_config)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override config keys, dotted for nesting (e.g. scene.camera.width=128)")


def resolve_default_config(path: str | None, default: str | None) -> str | None:
    """A relative default config missing from the working folder is taken from the checkout, or
    from the configs shipped inside the package when it is installed from a wheel."""
    if path and path == default and not Path(path).exists():
        shipped = bundled_config(path)  # <checkout>/configs/... or <site-packages>/sim2real/_configs/...
        if shipped is not None:
            return str(shipped)
    return path


def flag_overrides(args: argparse.Namespace, values: dict[str, str] | None = None,
                   switches: dict[str, str] | None = None) -> list[str]:
    """``key=value`` overrides from a command's explicit flags.

    ``values``: argument name -> config key, for flags given a value (an unset or empty one adds
    nothing); ``switches``: ``store_true`` argument name -> the override it stands for.
    """
    out = [f"{key}={getattr(args, attr)}" for attr, key in (values or {}).items()
           if getattr(args, attr) not in (None, "")]
    return out + [override for attr, override in (switches or {}).items() if getattr(args, attr)]


def config_from_args(schema: type[T], args: argparse.Namespace, extra: list[str] | None = None) -> T:
    """Load ``schema`` from --config plus overrides; ``extra`` (from explicit flags) wins last."""
    path = resolve_default_config(args.config, getattr(args, "_default_config", None))
    return load_config(schema, path, list(args.overrides) + list(extra or []))
