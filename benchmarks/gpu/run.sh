#!/usr/bin/env bash
# The GPU proof of issue 21 in one command; benchmarks/gpu/README.md says how to read what it writes.
#
#   OUT=/some/folder bash benchmarks/gpu/run.sh              # on the GPU machine (carry .whl/)
#   OUT=/tmp/x bash benchmarks/gpu/run.sh --dry-run          # anywhere: no build, GPU-only parts skipped
#   OUT=/tmp/x bash benchmarks/gpu/run.sh --only tests memcheck --cap tests=300
#
# Steps, each with a timeout, none stopping the next: wheels, build, info, tests, memcheck,
# racecheck, bench_ops_float32, bench_ops_bfloat16, bench_sde, bench_predict, bench_train, bench_report,
# nccl_train, nccl_check. $OUT receives summary.md, summary.json, logs.tar.gz, results.tar.gz.
# STDIFF_GPU_DRYRUN=1 is --dry-run; PYTHON picks the interpreter (default python3).
set -u
cd "$(dirname "$0")/../.." || exit 1
: "${OUT:?set OUT to the folder that receives summary.md, summary.json, logs.tar.gz and results.tar.gz}"
export OUT
PYTHON="${PYTHON:-python3}"
export PYTHON
exec "$PYTHON" benchmarks/gpu/run.py "$@"
