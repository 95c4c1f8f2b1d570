#!/usr/bin/env bash
# Stages 3 and 4 of the CPU demo model shipped in stdiff/demo_checkpoint (2 torchrun processes on 2 CPU
# cores each): the gap-aware stage-2 model (benchmarks/finetune_tiny_demo_gap.sh) is fine-tuned to
# generate the change from its conditioning frame (tiny_demo_residual.yaml), then against noised
# conditioning frames (tiny_demo_residual_clean.yaml); each stage is scored between frames
# (benchmarks/continuous_time.py).
#   benchmarks/finetune_tiny_demo_residual.sh STAGE2_EXPORT OUT_DIR [extra `stdiff train` options]
set -euo pipefail
init=${1:?usage: $0 STAGE2_EXPORT OUT_DIR [stdiff train options]}
out=${2:?usage: $0 STAGE2_EXPORT OUT_DIR [stdiff train options]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=1  # one thread per process: no OpenMP spinning on a shared machine
for stage in residual residual_clean; do
  python -m torch.distributed.run --standalone --nproc-per-node=2 -m stdiff train \
      --config "$here/tiny_demo_$stage.yaml" --set "init_from=$init" --out "$out/$stage" "$@"
  python "$here/continuous_time.py" "$out/$stage/export" --clips 256 --out "$out/$stage/continuous_time"
  init=$out/$stage/export
done
