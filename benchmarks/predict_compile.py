"""`python benchmarks/predict_compile.py [--models demo kth64] [--frames 3] [--repeats 5] [--out DIR]`:
does ``Predictor(compile=True)`` pay off on this machine?

Per model (the shipped demo checkpoint, or a preset with random weights) one video, one sample,
``--frames`` future frames with the demo's sampler (DPM-Solver++, 5 steps) in float32: the
compiled predictor's first call (compilation included) and the eager one's are timed once, then
both are timed round-robin (A B A B ...). ``break_even_frames`` is how many predicted frames it takes
for the per-frame gain to repay the compile time (empty when compiling is not faster).

Writes ``predict_compile.csv`` to ``--out`` (default ``benchmarks/results/<device-slug>``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from stdiff.bench.common import (
    COMMON_COLUMNS, TIMING_COLUMNS, default_out_dir, environment, measure_interleaved, write_csv,
)
from stdiff.commands.demo import shipped_checkpoint
from stdiff.predictor import Predictor

COLUMNS = COMMON_COLUMNS + ("model", "frames", "sampler", "steps", "dtype", "variant", "first_call_s",
                            *TIMING_COLUMNS, "ms_per_frame", "compile_s", "break_even_frames")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo", "kth64"],
                        help="'demo' (the shipped checkpoint) or preset names (random weights)")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device, rows = torch.device("cpu"), []
    out = Path(args.out) if args.out else default_out_dir(device, False)
    for name in args.models:
        source = (shipped_checkpoint() or "tiny") if name == "demo" else name
        cfg = Predictor.from_pretrained(source, dtype=torch.float32).config
        frames = torch.rand(1, cfg.num_observed, cfg.channels, cfg.image_size, cfg.image_size,
                            generator=torch.Generator().manual_seed(0))
        kw = dict(num_frames=args.frames, num_samples=1, sampler="dpmpp", steps=args.steps, seed=0, progress=False)
        predictors, first = {}, {}
        for variant, compile in (("eager", False), ("compiled", True)):
            predictors[variant] = Predictor.from_pretrained(source, compile=compile, dtype=torch.float32)
            begin = time.perf_counter()
            predictors[variant].predict(frames, **kw)
            first[variant] = time.perf_counter() - begin
        timings = measure_interleaved({v: (lambda p=p: p.predict(frames, **kw)) for v, p in predictors.items()},
                                      device, args.repeats, warmup=0)
        per_frame = {v: t.median_ms / args.frames for v, t in timings.items()}
        compile_s = first["compiled"] - first["eager"]
        gain_ms = per_frame["eager"] - per_frame["compiled"]
        for variant, timing in timings.items():
            rows.append({**environment("predict_compile", device, False), "model": name, "frames": args.frames,
                         "sampler": "dpmpp", "steps": args.steps, "dtype": "float32", "variant": variant,
                         "first_call_s": round(first[variant], 2), **timing.columns(),
                         "ms_per_frame": round(per_frame[variant], 2), "compile_s": round(compile_s, 1),
                         "break_even_frames": round(compile_s * 1e3 / gain_ms) if gain_ms > 0 else ""})
            print(f"{name:6s} {variant:9s} first call {first[variant]:7.1f} s  {per_frame[variant]:8.1f} ms/frame")
        write_csv(out / "predict_compile.csv", rows, COLUMNS)
    print(out / "predict_compile.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
