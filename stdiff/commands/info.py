"""``stdiff info``: versions, devices and available op backends."""
from __future__ import annotations

import argparse
import json

HELP = "versions, devices, the dtype \"auto\" picks on each (and why), available op backends"


def build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    from ..info import collect, render

    data = collect()
    print(json.dumps(data, indent=2) if args.json else render(data))
    return 0
