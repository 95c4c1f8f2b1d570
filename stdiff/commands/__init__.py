"""One module per ``stdiff`` sub-command, each with ``HELP``, ``build(parser)`` and ``run(args) -> int``;
here, the options several commands share."""
from __future__ import annotations

import argparse


def add_loading_options(parser: argparse.ArgumentParser) -> None:
    """The last options of the commands that load a checkpoint and show progress (predict, evaluate)."""
    parser.add_argument("--trust-unverified", action="store_true",
                        help="load a checkpoint whose config.json records no checksums (only if you trust it)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
