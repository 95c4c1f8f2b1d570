"""`python benchmarks/unet_dtype.py [--checkpoint DIR] [--batch 16] [--repeats 15] [--out DIR]`: one UNet
evaluation of the fast path (SPADE maps cached, channels_last, inference mode) in float32 against
bfloat16, timed interleaved (A B A B ...), and what ``dtype="auto"`` picks on this CPU.

Writes ``unet_dtype.csv`` (one row per dtype: median/p20/p80 ms, ratio to float32) to ``--out``
(default ``benchmarks/results/<device-slug>``). Default model: the demo checkpoint shipped with the package.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from stdiff.bench.common import (
    COMMON_COLUMNS, TIMING_COLUMNS, default_out_dir, environment, measure_interleaved, write_csv,
)
from stdiff.commands.demo import shipped_checkpoint
from stdiff.dtypes import auto_dtype
from stdiff.models.denoisers import CachedDenoiser
from stdiff.predictor import Predictor

COLUMNS = COMMON_COLUMNS + ("model", "batch", "dtype", "auto_picks", *TIMING_COLUMNS, "ratio_to_float32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder or preset name (default: the demo model)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    source = args.checkpoint or shipped_checkpoint() or "tiny"
    denoisers, cfg = {}, None
    for dtype in (torch.float32, torch.bfloat16):
        p = Predictor.from_pretrained(source, dtype=dtype)
        cfg = p.config
        d = CachedDenoiser(p.model.unet, dtype, channels_last=True)
        motion = torch.randn(args.batch, cfg.motion_channels, cfg.motion_size, cfg.motion_size)
        with torch.inference_mode():
            d.set_motion(motion)
        denoisers[str(dtype).removeprefix("torch.")] = d
    x = torch.randn(args.batch, cfg.channels, cfg.image_size, cfg.image_size)
    t = torch.full((args.batch,), 500, dtype=torch.long)

    def step(d: CachedDenoiser):
        def run() -> None:
            with torch.inference_mode():
                d(x, t, x)
        return run

    timings = measure_interleaved({name: step(d) for name, d in denoisers.items()}, device, args.repeats, warmup=2)
    env, picks = environment("unet_dtype", device, False), str(auto_dtype(device).dtype).removeprefix("torch.")
    rows = [{**env, "model": str(source).rsplit("/", 1)[-1], "batch": args.batch, "dtype": name, "auto_picks": picks,
             **tm.columns(), "ratio_to_float32": round(tm.median_ms / timings["float32"].median_ms, 3)}
            for name, tm in timings.items()]
    out = Path(args.out) if args.out else default_out_dir(device, False)
    print(write_csv(out / "unet_dtype.csv", rows, COLUMNS))
    for row in rows:
        print(f"{row['dtype']:9s} {row['median_ms']:8.1f} ms  x{row['ratio_to_float32']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
