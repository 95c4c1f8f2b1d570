"""`python benchmarks/report.py [--smoke] [--out DIR] [--device DEV]`: the same as `stdiff bench report`.

The benchmark lives in the installed package (:mod:`stdiff.bench.report`); this script is its
entry point in a source checkout.
"""
from __future__ import annotations

import sys

from stdiff.bench.report import main

if __name__ == "__main__":
    sys.exit(main())
