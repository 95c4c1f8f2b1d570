#!/usr/bin/env bash
# Train the CPU demo model shipped in stdiff/demo_checkpoint (about 95 min on 2 cores) and check
# its motion pathway (python -m stdiff.training.diagnose) on held-out clips.
#   benchmarks/train_tiny_demo.sh OUT_DIR [extra `stdiff train` options, e.g. --steps 100]
# Then: benchmarks/demo_quality.py OUT_DIR/export (quality vs sampling cost, copy-last beside).
set -euo pipefail
out=${1:?usage: $0 OUT_DIR [stdiff train options]}
shift
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=1  # one thread per process: no OpenMP spinning on a shared machine
python -m torch.distributed.run --standalone --nproc-per-node=2 -m stdiff train \
    --config "$here/tiny_demo.yaml" --out "$out" "$@"
python -m stdiff.training.diagnose "$out/export" --clips 64 --json "$out/motion_health.json"
