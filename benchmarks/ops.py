"""`python benchmarks/ops.py [--smoke] [--out DIR] [--device DEV] ...`: the same as `stdiff bench ops`.

The benchmark lives in the installed package (:mod:`stdiff.bench.ops`); this script is its
entry point in a source checkout.
"""
from __future__ import annotations

import sys

from stdiff.bench.ops import main

if __name__ == "__main__":
    sys.exit(main())
