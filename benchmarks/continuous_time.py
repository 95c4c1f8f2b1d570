"""Between-frame quality of exported models on held-out synthetic clips (the stride protocol).

    python benchmarks/continuous_time.py EXPORT [EXPORT ...] --clips 64 --stride 4 --out DIR

For each model: the prediction at ``stride`` x frame rate scored on-grid and between frames against
the real in-between frames, beside copy-last and the blend of the model's own 1x frames (same seed),
and the motion ratio (1.0 = exact); then digit identity on one-digit clips over a horizon twice the
trained one (a classifier trained on the train digit bank, stdiff.metrics.digit_identity): accuracy
over all 1x frames, all ``stride`` x frames, and at the last frame of each, beside the ground truth's.
Writes DIR/continuous_time.csv (one row per model and method) and DIR/continuous_time.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from stdiff import Predictor
from stdiff.bench.common import environment
from stdiff.data import build_dataset
from stdiff.data.digits import sklearn_digit_labels, sklearn_digits
from stdiff.data.synthetic import SyntheticMovingDigits
from stdiff.fileio import atomic_path, atomic_write_text
from stdiff.inbetween import score_clips, stride_times
from stdiff.metrics.digit_identity import DigitClassifier


def identity(predictor, classifier: DigitClassifier, clips: int, stride: int, samples: int, sampler: str,
             steps: int, seed: int, speed: int | None) -> dict[str, float]:
    """Digit-identity accuracy of 1x and stride x predictions over twice the trained horizon (one-digit clips)."""
    cfg = predictor.config
    to, horizon = cfg.num_observed, 2 * cfg.num_future
    data = SyntheticMovingDigits(clips, (to - 1 + horizon) * stride + 1, cfg.image_size, cfg.channels, num_digits=1,
                                 seed=seed, split="test", max_speed=speed, rate=stride)
    labels = sklearn_digit_labels("test")
    clip_labels = torch.tensor([labels[data.digit_tracks(i)[0][0]] for i in range(clips)])
    fine_clips = torch.stack([data[i] for i in range(clips)])
    observed = fine_clips[:, 0:(to - 1) * stride + 1:stride]
    truth = fine_clips[:, (to - 1) * stride + 1:]
    out = {"truth_all": classifier.accuracy(truth.flatten(0, 1), clip_labels.repeat_interleave(truth.shape[1]))}
    for name, rate in (("1x", 1), (f"{stride}x", stride)):
        frames = predictor.predict(observed, times=stride_times(to - 1, horizon, rate), num_samples=samples,
                                   sampler=sampler, steps=steps, seed=seed, progress=False).frames
        per = clip_labels[:, None, None].expand(*frames.shape[:3])
        out[f"{name}_all"] = classifier.accuracy(frames.flatten(0, 2), per.flatten())
        out[f"{name}_last"] = classifier.accuracy(frames[:, :, -1].flatten(0, 1), per[:, :, -1].flatten())
    out["truth_last"] = classifier.accuracy(truth[:, -1], clip_labels)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", help="exported model folders")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--sampler", default="dpmpp")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", help="UNet precision: float32, bfloat16 or auto")
    parser.add_argument("--data-speed", type=int, default=None, help="synthetic max speed (default image_size/16)")
    parser.add_argument("--identity-clips", type=int, default=64, help="one-digit clips for digit identity (0: skip)")
    parser.add_argument("--out", default="benchmarks/results/continuous_time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, report = [], {}
    classifier = None
    if args.identity_clips:
        first = Predictor.from_pretrained(args.exports[0], dtype=torch.float32).config
        size = round(first.image_size * 7 / 16)
        classifier = DigitClassifier(sklearn_digits(size, "train"), sklearn_digit_labels("train"))
    for export in args.exports:
        predictor = Predictor.from_pretrained(export, dtype=args.dtype if args.dtype == "auto" else getattr(torch, args.dtype))
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
        if classifier is not None:
            ident = identity(predictor, classifier, args.identity_clips, args.stride, args.samples, args.sampler,
                             args.steps, args.seed, args.data_speed)
            print(f"{export}: digit identity " + " ".join(f"{k}={v:.3f}" for k, v in ident.items()))
            summary["identity"] = ident
        report[Path(export).name] = {"summary": summary, "per_frame": scores.per_frame(), "seconds": time.perf_counter() - start,
                          "gap_conditioning": cfg.gap_conditioning}
        for method, row in summary.items():
            rows.append({"model": Path(export).name, "method": method, "clips": args.clips, "samples": args.samples,
                         "stride": args.stride, "sampler": f"{args.sampler}-{args.steps}",
                         "dtype": str(predictor.dtype).removeprefix("torch."), **row,
                         **environment("continuous_time", predictor.device, smoke=False)})
            print(f"{export:40s} {method:10s} " + " ".join(f"{k}={v:.3f}" for k, v in row.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(out / "continuous_time.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / "continuous_time.json", json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
