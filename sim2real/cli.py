"""The ``sim2real`` command line: one sub-command per pipeline stage.

Each command lives in ``sim2real/commands/<name>.py`` and is imported only when used, so
``sim2real --help`` stays fast and a stage's heavy dependencies load only for that stage.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from pathlib import Path

from sim2real.config import ConfigError
from sim2real.io import OutputError

# name -> (module, one-line help). Order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("sim2real.commands.generate", "render a domain-randomized synthetic dataset (COCO) with W workers"),
    "merge": ("sim2real.commands.merge", "join dataset shards written with --shard/--num-shards into one dataset"),
    "export-bop": ("sim2real.commands.export_bop", "write a generated dataset in the BOP layout for 6D pose tools"),
    "train": ("sim2real.commands.train", "train a backbone + task heads on a synthetic dataset"),
    "evaluate": ("sim2real.commands.evaluate", "score a checkpoint on a labelled dataset (sim or real)"),
    "predict": ("sim2real.commands.predict", "write one JSONL prediction per image/frame in original pixels"),
    "adapt": ("sim2real.commands.adapt", "adapt a sim-trained checkpoint to real footage (finetune/coral/mmd/dann/adabn)"),
    "suggest-labels": ("sim2real.commands.suggest_labels",
                       "rank unlabelled real frames to label first (k-centre diversity + model uncertainty)"),
    "compare": ("sim2real.commands.compare", "run source-only, real-only and every adaptation method on the same budget"),
    "gap": ("sim2real.commands.gap", "measure the sim-to-real gap of a checkpoint on a sim and a real dataset"),
    "tune": ("sim2real.commands.tune", "find which randomization causes the sim-to-real gap, tune the scene, verify"),
    "export": ("sim2real.commands.export", "export a checkpoint to ONNX or TorchScript for edge CPUs"),
    "live": ("sim2real.commands.live", "run a checkpoint on a camera, video, stream or folder of frames"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    return importlib.import_module(module)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sim2real",
        description="Simulate, train, adapt to a real camera, measure the gap, deploy.",
        epilog="Run 'sim2real <command> --help' for a command's options. Config keys can be "
               "overridden as key=value (dotted keys for nesting) after the options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('sim2real').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in COMMANDS.items():
        if name == wanted:
            mod = _load(name)
            p = sub.add_parser(name, help=help_text, description=getattr(mod, "DESCRIPTION", help_text),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
        else:
            sub.add_parser(name, help=help_text)
    return parser


_PACKAGE_DIR = Path(__file__).resolve().parent


def _ours(category: type, filename: str) -> bool:
    """A warning sim2real raised for the user: our own category, or issued from our code."""
    if getattr(category, "__module__", "").split(".")[0] == "sim2real":
        return True
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def one_line_warnings(command: str | None):
    """sim2real's user-facing warnings as one clean line (``sim2real <command>: warning: ...``) instead
    of Python's default format with the internal source line; other libraries' warnings unchanged."""
    default = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None):
        if _ours(category, filename):
            text = " ".join(str(message).split())
            return f"sim2real{' ' + command if command else ''}: warning: {text}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = fmt
    try:
        yield
    finally:
        warnings.formatwarning = default


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        with one_line_warnings(args.command):
            return int(args._run(args) or 0)
    except (ConfigError, OutputError, FileNotFoundError, ValueError) as e:
        print(f"sim2real {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sim2real {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
