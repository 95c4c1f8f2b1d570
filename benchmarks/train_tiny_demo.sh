#!/usr/bin/env bash
# Train the CPU demo model (~11 min on 2 shared cores) and score its one-step predictions
# against "copy the last frame" on 256 held-out synthetic clips.
#   benchmarks/train_tiny_demo.sh OUT_DIR [extra `stdiff train` options, e.g. --steps 100]
set -euo pipefail
out=${1:?usage: $0 OUT_DIR [stdiff train options]}
shift
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=1  # one thread per process: no OpenMP spinning on a shared machine
python -m torch.distributed.run --standalone --nproc-per-node=2 -m stdiff train \
    --config "$here/tiny_demo.yaml" --out "$out" "$@"
python -m stdiff.training.quickeval "$out/export" --clips 256 --samples 2 --sampler ddpm --steps 100 \
    --json "$out/quickeval_ddpm100.json"
