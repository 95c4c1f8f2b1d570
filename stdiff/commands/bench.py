"""``stdiff bench ops|sde|predict|report``: run a benchmark into CSVs, or render a results folder.

``sde``, ``predict`` and ``report`` are installed with the package (:mod:`stdiff.bench`); each
writes CSV rows (device, versions, date, load average, ...) under ``--out`` (default
``benchmarks/results/<device-slug>`` in the working directory) and ``report`` turns that folder
into ``README.md`` and PNG charts; ``--smoke`` runs in seconds (CI). ``ops`` runs
``benchmarks/ops.py`` of a source checkout (it is not installed): run it from the repository
root; its arguments are passed through (``stdiff bench ops --help`` lists them).
"""
from __future__ import annotations

import argparse
import importlib
import runpy
from pathlib import Path

from ..bench.options import BENCHMARKS, build as build_options

HELP = "benchmarks: fused ops, SDE solve, predictor speed, and their Markdown/PNG report"

#: benchmarks that live only in a source checkout: name -> (script relative to the checkout, help line)
SOURCE_SCRIPTS: dict[str, tuple[str, str]] = {
    "ops": ("benchmarks/ops.py", "fused-op microbenchmarks on every backend (runs benchmarks/ops.py of a source "
                                 "checkout; its options are passed through)"),
}


def build(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (_, help_line) in SOURCE_SCRIPTS.items():
        # '+' as the only prefix: every following argument, options included, goes to the script
        script = sub.add_parser(name, help=help_line, description=help_line, prefix_chars="+")
        script.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")
    for name, (_, help_line) in BENCHMARKS.items():
        build_options(name, sub.add_parser(name, help=help_line, description=help_line))


def source_script(relative: str) -> Path:
    """``relative`` in the working directory or in the checkout that holds the imported stdiff."""
    import stdiff

    for root in (Path.cwd(), Path(stdiff.__file__).resolve().parent.parent):
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"{relative} is not in the working directory nor next to the stdiff package: this "
                            "benchmark needs a source checkout of stdiff (run it from the repository root)")


def run(args: argparse.Namespace) -> int:
    if args.benchmark in SOURCE_SCRIPTS:
        script = source_script(SOURCE_SCRIPTS[args.benchmark][0])
        return int(runpy.run_path(str(script), run_name=f"stdiff_bench_{args.benchmark}")["main"](args.args) or 0)
    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    for path in module.run_cli(args):
        print(path)
    return 0
