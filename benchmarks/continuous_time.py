"""Between-frame quality of exported models on held-out synthetic clips (the stride protocol).

    python benchmarks/continuous_time.py EXPORT [EXPORT ...] --clips 64 --stride 4 --out DIR

For each model: the prediction at ``stride`` x frame rate scored on-grid and between frames against
the real in-between frames, beside copy-last and the blend of the model's own 1x frames (same seed),
and the motion ratio (1.0 = exact). Writes DIR/continuous_time.csv (one row per model and method)
and DIR/continuous_time.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from stdiff import Predictor
from stdiff.data import build_dataset
from stdiff.fileio import atomic_path, atomic_write_text
from stdiff.inbetween import score_clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", help="exported model folders")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--sampler", default="dpmpp")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-speed", type=int, default=None, help="synthetic max speed (default image_size/16)")
    parser.add_argument("--out", default="benchmarks/results/continuous_time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, report = [], {}
    for export in args.exports:
        predictor = Predictor.from_pretrained(export)
        cfg = predictor.config
        horizon = cfg.num_future
        data = build_dataset("synthetic", "test", cfg.image_size, num_observed=(cfg.num_observed - 1) * args.stride + 1,
                             num_future=horizon * args.stride, channels=cfg.channels, num_videos=args.clips,
                             seed=args.seed, max_speed=args.data_speed, rate=args.stride)
        clips = torch.stack([data[i] for i in range(args.clips)])
        start = time.perf_counter()
        scores = score_clips(predictor, clips, cfg.num_observed, args.stride, horizon, args.samples, args.sampler,
                             args.steps, args.seed, progress=True)
        summary = scores.summary()
        report[export] = {"summary": summary, "per_frame": scores.per_frame(), "seconds": time.perf_counter() - start,
                          "gap_conditioning": cfg.gap_conditioning}
        for method, row in summary.items():
            rows.append({"export": export, "method": method, "clips": args.clips, "samples": args.samples,
                         "stride": args.stride, "sampler": f"{args.sampler}-{args.steps}", **row})
            print(f"{export:40s} {method:10s} " + " ".join(f"{k}={v:.3f}" for k, v in row.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with atomic_path(out / "continuous_time.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / "continuous_time.json", json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
