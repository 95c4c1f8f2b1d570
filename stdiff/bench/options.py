"""Command-line options of the benchmarks (argparse only: no benchmark code is imported here).

Shared by ``stdiff bench <name>`` (:mod:`stdiff.commands.bench`) and the scripts
``benchmarks/<name>.py``; :data:`BENCHMARKS` maps each name to its module and help line.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

from ..ops.contract import OP_NAMES

__all__ = ["BENCHMARKS", "OP_DTYPES", "OP_NAMES", "add_common", "build"]

#: name -> (module that runs it with ``run_cli(args) -> list[Path]``, help line)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "ops": ("stdiff.bench.ops", "fused-op microbenchmarks on every available backend (forward, forward+backward)"),
    "sde": ("stdiff.bench.sde", "whole motion-SDE solve: stdiff vs torchsde (same nets, same Brownian increments)"),
    "predict": ("stdiff.bench.predict", "Predictor.predict: frames/s, peak memory, time shares, TFLOP/s "
                                        "(reference vs fast vs bf16 vs DPM-Solver++)"),
    "train": ("stdiff.bench.train", "training steps/s and clips/s per preset, dtype and op backend (fused vs "
                                    "reference), share of time in convolutions"),
    "report": ("stdiff.bench.report", "turn a device's benchmark CSVs into README.md tables and PNG charts"),
}


def add_common(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes: --smoke, --out DIR, --device."""
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long run with tiny shapes and 1 repeat (CI: checks that it runs, not speed)")
    parser.add_argument("--out", default=None,
                        help="results folder (default benchmarks/results/<device-slug>, or <device-slug>-smoke "
                             "with --smoke, under the working directory)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")


def _predict(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--preset", action="append", default=None,
                        help="only this preset of the plan (repeatable; default: all of the plan's presets)")


#: the dtypes ``stdiff bench ops`` can time (the ops: every op of the contract, ``OP_NAMES``)
OP_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "float64")


def _ops(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=OP_DTYPES)
    parser.add_argument("--presets", nargs="+", default=["kth64", "cityscapes128"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--ops", nargs="+", default=None, choices=OP_NAMES, help="only these ops (default: all)")
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--max-elements", type=int, default=None,
                        help="skip cases whose largest tensor has more elements (default: 2**25 on CPU, no limit on GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=25, help="timed calls per backend at most")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per case at most")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")


def _train(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--presets", nargs="+", default=None, help="default: tiny kth64 (tiny with --smoke)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                        help="bfloat16: the step under autocast, as `stdiff train --bf16`")
    parser.add_argument("--backends", nargs="+", default=["fused", "reference"], choices=["fused", "reference"])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="clips per step (default: 8 for tiny and on GPU, 1 for larger presets on CPU)")
    parser.add_argument("--k", type=int, default=None, help="future frames per clip in the loss (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 5; 1 with --smoke)")


_EXTRA: dict[str, Callable[[argparse.ArgumentParser], None]] = {"predict": _predict, "ops": _ops, "train": _train}


def build(name: str, parser: argparse.ArgumentParser) -> None:
    """Add benchmark ``name``'s options to ``parser``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}")
    _EXTRA.get(name, add_common)(parser)
