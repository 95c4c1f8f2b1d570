#!/usr/bin/env bash
# Stages 2 to 6 of the CPU demo model shipped in stdiff/demo_checkpoint, each a fine-tune of the one
# before on 2 CPU cores (2 torchrun processes), scored between frames (benchmarks/continuous_time.py):
#   gap               the gap-blind stage-1 model (benchmarks/train_tiny_demo.sh) made gap-aware
#   residual          the UNet generates the change from its conditioning frame
#   residual_clean    ... against noised conditioning frames (cond_noise), so it cleans up its own errors
#   residual_cleaner  longer, against more strongly noised conditioning frames, on other clips
#   residual_fast     noisier still (std up to 0.4), with the fast CPU levers (bf16 where native,
#                     channels_last, torch.compile, 16 clips per process)
# Each stage reads benchmarks/tiny_demo_<stage>.yaml and starts from the previous stage's export.
#   benchmarks/finetune_tiny_demo.sh INIT_EXPORT OUT_DIR STAGE [STAGE ...] [-- stdiff train options]
#   e.g. benchmarks/finetune_tiny_demo.sh runs/stage1/export runs/demo gap residual residual_clean residual_cleaner residual_fast
set -euo pipefail
usage="usage: $0 INIT_EXPORT OUT_DIR STAGE [STAGE ...] [-- stdiff train options]"
init=${1:?$usage}
out=${2:?$usage}
shift 2
stages=()
while (($#)) && [[ $1 != -- ]]; do stages+=("$1"); shift; done
(($#)) && shift  # the --
((${#stages[@]})) || { echo "$usage" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
for stage in "${stages[@]}"; do
  [[ -f $here/tiny_demo_$stage.yaml ]] || { echo "unknown stage '$stage': no $here/tiny_demo_$stage.yaml" >&2; exit 2; }
done
export OMP_NUM_THREADS=1  # one thread per process: no OpenMP spinning on a shared machine
for stage in "${stages[@]}"; do
  python -m torch.distributed.run --standalone --nproc-per-node=2 -m stdiff train \
      --config "$here/tiny_demo_$stage.yaml" --set "init_from=$init" --out "$out/$stage" "$@"
  python "$here/continuous_time.py" "$out/$stage/export" --clips 256 --out "$out/$stage/continuous_time"
  init=$out/$stage/export
done
