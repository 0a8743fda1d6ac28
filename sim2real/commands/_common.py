"""Argument helpers shared by commands that take a stage config."""

from __future__ import annotations

import argparse
from typing import TypeVar

from sim2real.config import load_config

T = TypeVar("T")


def add_config_arguments(p: argparse.ArgumentParser, default_config: str | None) -> None:
    p.add_argument("--config", default=default_config,
                   help=f"stage YAML config (default: {default_config or 'built-in defaults'})")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override config keys, dotted for nesting (e.g. scene.camera.width=128)")


def config_from_args(schema: type[T], args: argparse.Namespace, extra: list[str] | None = None) -> T:
    """Load ``schema`` from --config plus overrides; ``extra`` (from explicit flags) wins last."""
    return load_config(schema, args.config, list(args.overrides) + list(extra or []))
