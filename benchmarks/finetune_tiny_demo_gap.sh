#!/usr/bin/env bash
# Stage 2 of the CPU demo model shipped in stdiff/demo_checkpoint: fine-tune the gap-blind stage-1
# model (benchmarks/train_tiny_demo.sh) into a gap-aware one with benchmarks/tiny_demo_gap.yaml
# (2 torchrun processes on 2 CPU cores), then score it between frames (benchmarks/continuous_time.py).
#   benchmarks/finetune_tiny_demo_gap.sh STAGE1_EXPORT OUT_DIR [extra `stdiff train` options]
set -euo pipefail
init=${1:?usage: $0 STAGE1_EXPORT OUT_DIR [stdiff train options]}
out=${2:?usage: $0 STAGE1_EXPORT OUT_DIR [stdiff train options]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=1  # one thread per process: no OpenMP spinning on a shared machine
python -m torch.distributed.run --standalone --nproc-per-node=2 -m stdiff train \
    --config "$here/tiny_demo_gap.yaml" --set "init_from=$init" --out "$out" "$@"
python "$here/continuous_time.py" "$out/export" --clips 256 --out "$out/continuous_time"
