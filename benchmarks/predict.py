"""`python benchmarks/predict.py [--smoke] [--out DIR] [--device DEV]`: the same as `stdiff bench predict`.

The benchmark lives in the installed package (:mod:`stdiff.bench.predict`); this script is its
entry point in a source checkout.
"""
from __future__ import annotations

import sys

from stdiff.bench.predict import main

if __name__ == "__main__":
    sys.exit(main())
