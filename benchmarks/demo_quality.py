"""Quality against sampling cost of the demo model, with "copy the last frame" beside it.

    python benchmarks/demo_quality.py stdiff/demo_checkpoint --clips 256 --samples 2

Predicts the Tp future frames of held-out synthetic test clips (the test split: other digit
images and other random streams than training) with every sampler setting (DDPM 100/50/20,
DDIM 50/20/10, DPM-Solver++ 2M and 3M at 20/10/5 steps; fp32 and bf16), and the official
algorithm (``exact_reference=True``, DDPM-100) for the per-frame time of the official code.
Writes one CSV row per setting (PSNR, SSIM, diversity, frames/s, device, versions), a plot of
PSNR and SSIM against frames/s, and prints the fastest setting within 2 % of DDPM-100.
Diversity is also reported separately for clips where a digit bounces off a wall at an
unobserved moment (a new random velocity: the future is uncertain) and for the others.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from stdiff import Predictor
from stdiff.bench.common import default_out_dir, environment, write_csv
from stdiff.data import SyntheticMovingDigits
from stdiff.fileio import atomic_path, atomic_write_text
from stdiff.metrics.tradeoff import quality_vs_speed

SETTINGS = [("ddpm", 100), ("ddpm", 50), ("ddpm", 20), ("ddim", 50), ("ddim", 20), ("ddim", 10),
            ("dpmpp", 20), ("dpmpp", 10), ("dpmpp", 5), ("dpmpp3m", 20), ("dpmpp3m", 10), ("dpmpp3m", 5)]


def held_out_clips(cfg, count: int, seed: int = 0) -> torch.Tensor:
    """(count, To + Tp, C, H, W) clips of the synthetic test split, in [0, 1]."""
    data = SyntheticMovingDigits(num_videos=count, num_frames=cfg.num_observed + cfg.num_future,
                                 image_size=cfg.image_size, channels=cfg.channels, split="test", seed=seed)
    return torch.stack([data[i] for i in range(count)])


def bouncing(cfg, count: int, seed: int = 0) -> torch.Tensor:
    """(count,) bool: a digit of the held-out clip hits a wall at an unobserved moment (its next velocity
    is redrawn between the last observed frame and the last predicted one): the future is uncertain."""
    data = SyntheticMovingDigits(num_videos=count, num_frames=cfg.num_observed + cfg.num_future,
                                 image_size=cfg.image_size, channels=cfg.channels, split="test", seed=seed)
    last = cfg.num_observed + cfg.num_future - 1
    return torch.tensor([any(cfg.num_observed - 1 <= t < last for t in data.wall_hits(i)) for i in range(count)])


def diversity_split(predictor: Predictor, clips: torch.Tensor, samples: int, seed: int) -> dict[str, float]:
    """Per-pixel std across samples (DDPM-100) for clips with and without an unobserved bounce, and per frame."""
    to = predictor.config.num_observed
    times = [float(t) for t in range(to, clips.shape[1])]
    pred = predictor.predict(clips[:, :to], times=times, num_samples=samples, sampler="ddpm", steps=100,
                             seed=seed, progress=False).frames.float()
    per_clip = pred.std(dim=1, correction=0).flatten(2).mean(2)          # (N, T)
    bounce = bouncing(predictor.config, clips.shape[0])
    out = {"samples": samples, "bounce_clips": int(bounce.sum()), "other_clips": int((~bounce).sum()),
           "pixel_std_bounce": float(per_clip[bounce].mean()) if bounce.any() else float("nan"),
           "pixel_std_other": float(per_clip[~bounce].mean()) if (~bounce).any() else float("nan")}
    out.update({f"pixel_std_frame{k + 1}": float(v) for k, v in enumerate(per_clip.mean(0))})
    return out


def reference_seconds_per_frame(model_dir: str, clips: torch.Tensor, samples: int, seed: int) -> float:
    """Seconds per predicted frame of the official algorithm (DDPM-100, fp32, no SPADE cache)."""
    official = Predictor.from_pretrained(model_dir, exact_reference=True)
    to = official.config.num_observed
    start = time.perf_counter()
    official.predict(clips[:, :to], times=[float(to)], num_samples=samples, sampler="ddpm", steps=100, seed=seed,
                     progress=False)
    return (time.perf_counter() - start) / (clips.shape[0] * samples)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baseline = next(r for r in rows if r["method"] == "copy_last")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("psnr", "ssim")):
        for dtype, marker in (("float32", "o"), ("bfloat16", "s")):
            for sampler in dict.fromkeys(r["sampler"] for r in rows if r["method"] == "model"):
                pts = [r for r in rows if r["method"] == "model" and r["sampler"] == sampler and r["dtype"] == dtype]
                if pts:
                    ax.plot([r["frames_per_second"] for r in pts], [r[metric] for r in pts], marker=marker,
                            label=f"{sampler} {dtype}")
                    for r in pts:
                        ax.annotate(str(r["steps"]), (r["frames_per_second"], r[metric]), fontsize=7)
        ax.axhline(baseline[metric], color="k", linestyle="--", label="copy last frame")
        ax.set_xscale("log")
        ax.set_xlabel("predicted frames / s (CPU)")
        ax.set_ylabel(metric.upper())
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("demo model: quality against sampling cost (held-out clips, mean over samples)")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="exported model folder (e.g. stdiff/demo_checkpoint)")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--settings", default=",".join(f"{s}-{n}" for s, n in SETTINGS),
                        help="sampler-steps list (default: all of the table)")
    parser.add_argument("--diversity-clips", type=int, default=64, help="clips of the bounce/no-bounce diversity split (0: skip it)")
    parser.add_argument("--name", default="demo_quality", help="file name stem of the outputs")
    parser.add_argument("--diversity-only", action="store_true",
                        help="only the bounce / no-bounce diversity split (DDPM-100), into <name>.json")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results/<device>)")
    args = parser.parse_args(argv)
    if args.diversity_clips < 0 or (args.diversity_only and args.diversity_clips == 0):
        parser.error(f"--diversity-clips must be >= 0 (0 skips the split; >= 1 with --diversity-only), "
                     f"got {args.diversity_clips}")
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_pretrained(args.checkpoint)
    clips = held_out_clips(predictor.config, args.clips, args.seed)
    out = Path(args.out) if args.out else default_out_dir(predictor.device, smoke=False)
    if args.diversity_only:
        diversity = diversity_split(predictor, clips[: args.diversity_clips], max(2, args.samples), args.seed)
        atomic_write_text(out / f"{args.name}.json", json.dumps(diversity, indent=2))
        print(json.dumps(diversity))
        return
    chosen = [(name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1])) for name in args.settings.split(",")]
    settings = [(s, n, d) for d in args.dtypes.split(",") for s, n in chosen]
    rows = quality_vs_speed(predictor, clips, predictor.config.num_observed, settings, num_samples=args.samples,
                            seed=args.seed)
    official_spf = reference_seconds_per_frame(args.checkpoint, clips[: min(16, args.clips)], args.samples,
                                               args.seed)
    env = environment("demo_quality", predictor.device, smoke=False)
    for r in rows:
        r.update(clips=args.clips, samples=args.samples,
                 speedup_vs_official=(None if r["frames_per_second"] is None
                                      else r["frames_per_second"] * official_spf), **env)
    write_csv(out / f"{args.name}.csv", rows, list(rows[0]))
    plot(rows, out / f"{args.name}.png")
    diversity = (diversity_split(predictor, clips[: args.diversity_clips], max(2, args.samples), args.seed)
                 if args.diversity_clips else None)
    ref = next(r for r in rows if r["sampler"] == "ddpm" and r["steps"] == 100 and r["dtype"] == "float32")
    close = [r for r in rows if r["method"] == "model" and r["psnr"] >= 0.98 * ref["psnr"]
             and r["ssim"] >= 0.98 * ref["ssim"]]
    fastest = max(close, key=lambda r: r["frames_per_second"])
    summary = {"official_seconds_per_frame": official_spf, "ddpm100": ref, "fastest_within_2pct": fastest,
               "copy_last": rows[-1], "diversity": diversity}
    atomic_write_text(out / f"{args.name}.json", json.dumps(summary, indent=2, default=str))
    print(f"{'setting':22s} {'PSNR':>6s} {'SSIM':>6s} {'std':>6s} {'frames/s':>9s} {'x official':>10s}")
    for r in rows:
        name = "copy last frame" if r["method"] == "copy_last" else f"{r['sampler']}-{r['steps']} {r['dtype']}"
        fps = "" if r["frames_per_second"] is None else f"{r['frames_per_second']:9.1f}"
        speed = "" if r["speedup_vs_official"] is None else f"{r['speedup_vs_official']:10.1f}"
        print(f"{name:22s} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['pixel_std']:6.3f} {fps:>9s} {speed:>10s}")
    print(f"fastest within 2 % of DDPM-100: {fastest['sampler']}-{fastest['steps']} {fastest['dtype']} "
          f"({fastest['frames_per_second']:.1f} frames/s, {fastest['speedup_vs_official']:.1f}x the official "
          f"per-frame time); diversity {json.dumps(diversity)}")
    print(f"wrote {out / args.name}.csv, .png, .json")


if __name__ == "__main__":
    main()
