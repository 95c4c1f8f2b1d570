"""``stdiff bench ops|sde|predict|train|report``: run a benchmark into CSVs, or render a results folder.

All benchmarks are installed with the package (:mod:`stdiff.bench`); each writes CSV rows
(device, versions, date, load average, ...) under ``--out`` (default
``benchmarks/results/<device-slug>`` in the working directory) and ``report`` turns that folder
into ``README.md`` and PNG charts; ``--smoke`` runs in seconds (CI).
"""
from __future__ import annotations

import argparse
import importlib

from ..bench.options import BENCHMARKS, build as build_options

HELP = "benchmarks: fused ops, SDE solve, predictor speed, training speed, and their Markdown/PNG report"


def build(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (_, help_line) in BENCHMARKS.items():
        build_options(name, sub.add_parser(name, help=help_line, description=help_line))


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    for path in module.run_cli(args):
        print(path)
    return 0
