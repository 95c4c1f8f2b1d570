#!/usr/bin/env bash
# Process/thread layout of CPU training of the demo configuration, alternated (A B C A B C):
#   A: 2 torchrun processes x 1 thread, 8 clips each (the demo layout)
#   B: 1 process x 2 threads, 16 clips
#   C: 1 process x 1 thread, 8 clips (one core)
# 40 steps each; clips/s of the last 20 steps (logs/train.csv) into OUT_DIR/train_layout.csv.
#   benchmarks/train_layout.sh OUT_DIR [LAYOUTS, default "A B C A B C"]
set -euo pipefail
out=${1:?usage: $0 OUT_DIR [LAYOUTS]}
layouts=${2:-A B C A B C}
here=$(cd "$(dirname "$0")" && pwd)
common=(--config "$here/tiny_demo.yaml" --steps 40 --set log_every=20 --set save_every=0 --set export_every=40
        --set warmup_steps=10)
mkdir -p "$out"
echo "run,layout,processes,threads,clips_per_process,clips_per_s,note,cpu,date" > "$out/train_layout.csv.tmp"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
n=0
for v in $layouts; do
  n=$((n + 1)); run="$out/run$n-$v"; rm -rf "$run"
  case $v in
    A) OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc-per-node=2 -m stdiff train \
         "${common[@]}" --out "$run" > "$run.log" 2>&1; shape="2,1,8" ;;
    B) OMP_NUM_THREADS=2 python -m stdiff train "${common[@]}" --batch-size 16 --out "$run" > "$run.log" 2>&1
       shape="1,2,16" ;;
    C) OMP_NUM_THREADS=1 python -m stdiff train "${common[@]}" --out "$run" > "$run.log" 2>&1; shape="1,1,8" ;;
    *) echo "unknown layout $v (A, B or C)" >&2; exit 2 ;;
  esac
  echo "$n,$v,$shape,$(tail -1 "$run/logs/train.csv" | cut -d, -f5),complete,$cpu,$(date -u +%FT%T)" \
    >> "$out/train_layout.csv.tmp"
done
mv "$out/train_layout.csv.tmp" "$out/train_layout.csv"
