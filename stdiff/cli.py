"""The ``stdiff`` command. Sub-commands live in :mod:`stdiff.commands` (imported only when run)."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# sub-command name -> module in stdiff.commands
COMMANDS: dict[str, str] = {
    "info": "info",
    "demo": "demo",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "bench": "bench",
    "convert-official": "convert_official",
}


def _module(name: str):
    return importlib.import_module(f"stdiff.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stdiff", description="STDiff: continuous stochastic video prediction")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _module(name)
        module.build(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code. Bad user input and failed writes (e.g. a full disk) print one
    line and exit with 2."""
    from .fileio import FolderLocked, WriteError

    args = build_parser().parse_args(argv)
    try:
        return int(_module(args.command).run(args) or 0)
    except (ValueError, FileNotFoundError, WriteError, FolderLocked) as exc:
        print(f"stdiff {args.command}: error: {exc}", file=sys.stderr)
        return 2
