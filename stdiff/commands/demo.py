"""``stdiff demo``: predict stochastic moving digits at 1x and 4x frame rate with a small model.

Uses ``--checkpoint DIR`` when given, else the checkpoint shipped in ``stdiff/demo_checkpoint``
(trained by ``stdiff train`` on the tiny preset), else the model an earlier demo run trained in
``--out``/train, else trains the tiny preset for ``--train-steps`` steps first. Writes GIFs and PNG grids (prediction, ground truth,
uncertainty map) and ``metrics.json`` to ``--out``; prints PSNR/SSIM and frames/s.

Default sampler: DPM-Solver++ with 5 steps, the fastest setting within 2 % of DDPM-100's PSNR and SSIM
in the demo-quality table (``benchmarks/demo_quality.py``); ``--sampler ddpm --steps 100`` runs the
official algorithm.
"""
from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

from ..dtypes import DTYPE_NAMES

HELP = "predict moving digits at 1x and 4x frame rate with a small model: GIFs, PNG grids, PSNR/SSIM, frames/s"
#: The demo's sampler and steps: the fastest within 2 % of DDPM-100's PSNR/SSIM in the demo-quality table.
DEFAULT_SAMPLER, DEFAULT_STEPS = "dpmpp", 5


def build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="stdiff-demo", help="output folder (default: ./stdiff-demo)")
    parser.add_argument("--checkpoint", default=None,
                        help="exported model folder (default: the checkpoint shipped with the package)")
    parser.add_argument("--videos", type=int, default=3, help="test clips to predict (default 3)")
    parser.add_argument("--samples", type=int, default=3, help="samples per clip (default 3)")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER,
                        help=f"ddpm, ddim, dpmpp or dpmpp3m (default {DEFAULT_SAMPLER}: DPM-Solver++, within 2 %% of "
                             "DDPM-100's quality on the demo model; --sampler ddpm --steps 100 is the official "
                             "algorithm)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"denoising steps (default {DEFAULT_STEPS})")
    parser.add_argument("--dtype", default="auto", choices=("auto", *DTYPE_NAMES),
                        help="UNet precision (default auto: bfloat16 where the device computes it natively, "
                             "else float32; `stdiff info` says which)")
    parser.add_argument("--fast", action="store_true", help="quick run for CI: at most 2 clips and 2 samples")
    parser.add_argument("--train-steps", type=int, default=600,
                        help="steps of the short training run used when no checkpoint is shipped (default 600, "
                             "about 5 minutes on 2 CPU cores)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test clips and the sampling noise")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: the small model gains little from more, and on a busy "
                             "machine waiting threads make it several times slower; 0 = torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def shipped_checkpoint() -> Path | None:
    """The checkpoint folder shipped inside the package, or None when there is none."""
    from ..checkpoint import is_pretrained_dir

    path = Path(str(resources.files("stdiff") / "demo_checkpoint"))
    return path if is_pretrained_dir(path) else None


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch (0: leave torch's default)."""
    import torch

    if threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def _train_model(args: argparse.Namespace, out: Path, device):
    """Short training with the shipped checkpoint's recipe (when none is shipped); returns the EMA model."""
    from ..training import TrainConfig, train

    print(f"no shipped checkpoint: training a small model for {args.train_steps} steps (use --checkpoint DIR "
          "to skip this)")
    cfg = TrainConfig(preset="tiny", steps=args.train_steps, out=str(out / "train"),
                      device=str(device), seed=args.seed, workers=0, batch_size=8, lr=1e-3,
                      warmup_steps=min(50, args.train_steps // 10), save_every=0, preview_every=0,
                      export_every=args.train_steps, log_every=max(1, args.train_steps // 20))
    return train(cfg).ema_model


def _load_predictor(args: argparse.Namespace, out: Path, device):
    from ..checkpoint import is_pretrained_dir
    from ..predictor import Predictor

    path = Path(args.checkpoint) if args.checkpoint else shipped_checkpoint()
    if path is None and is_pretrained_dir(out / "train" / "export"):
        path = out / "train" / "export"  # trained by an earlier run of the demo
    if path is not None:
        print(f"model: {path}")
        return Predictor.from_pretrained(path, device=device)
    return Predictor(_train_model(args, out, device)).to(device)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import SyntheticMovingDigits
    from ..dtypes import resolve_dtype
    from ..inbetween import StrideScores, blend_in_time, stride_times
    from ..training.distributed import resolve_device

    videos, samples = (min(args.videos, 2), min(args.samples, 2)) if args.fast else (args.videos, args.samples)
    sampler, steps = args.sampler, args.steps
    for name, value in (("--videos", videos), ("--samples", samples), ("--steps", steps),
                        ("--train-steps", args.train_steps)):
        _positive(name, value)
    set_threads(args.threads)
    out = Path(args.out)
    device = resolve_device(args.device)
    predictor = _load_predictor(args, out, device).to(dtype=resolve_dtype(args.dtype, device))
    cfg = predictor.config
    to, tp, rate = cfg.num_observed, cfg.num_future, 4
    data = SyntheticMovingDigits(num_videos=videos, num_frames=(to - 1 + tp) * rate + 1, image_size=cfg.image_size,
                                 channels=cfg.channels, split="test", seed=args.seed, rate=rate)
    clips = torch.stack([data[i] for i in range(videos)])              # real frames at 4x frame rate
    observed = clips[:, 0:(to - 1) * rate + 1:rate]
    truth_fine = clips[:, (to - 1) * rate + 1:]
    truth = truth_fine[:, rate - 1::rate]
    fine_times = stride_times(to - 1, tp, rate)
    dtype = str(predictor.dtype).removeprefix("torch.")
    print(f"{videos} test clips of {to} observed frames, {samples} samples each; sampler {sampler}, {steps} steps, "
          f"UNet in {dtype}{' (auto)' if args.dtype == 'auto' else ''}, device {device}; "
          f"{'gap-aware' if predictor.model.gap_aware else 'gap-blind'} model generating "
          f"{'the change from the previous frame' if predictor.model.residual else 'frames'}")
    predictions, timing = {}, {}
    for r in (1, rate):
        start = time.perf_counter()
        predictions[r] = predictor.predict(observed, num_frames=r * tp, fps=r, num_samples=samples, sampler=sampler,
                                           steps=steps, seed=args.seed, progress=not args.no_progress)
        seconds = time.perf_counter() - start
        frames = videos * samples * r * tp
        timing[f"{r}x"] = {"seconds": seconds, "frames_per_second": frames / seconds, "predicted_frames": frames}
    scores = StrideScores(fine_times, rate)
    last = observed[:, -1]
    start_frame = last[:, None].expand(-1, samples, -1, -1, -1)
    scores.update({"model": predictions[rate].frames.cpu(),
                   "copy_last": start_frame[:, :, None].expand_as(predictions[rate].frames).cpu(),
                   "blend": blend_in_time(start_frame, predictions[1].frames.cpu(), rate)}, truth_fine, last)
    summary = scores.summary()
    one_x = predictions[1].score(truth, [float(t) for t in range(to, to + tp)])
    predictions[1].save_gif(out / "prediction_1x.gif", truth, predictions[1].times, fps=4)
    predictions[1].save_png_grid(out / "grid_1x.png", truth, predictions[1].times)
    predictions[rate].save_gif(out / f"prediction_{rate}x.gif", truth_fine, fine_times, fps=4 * rate)
    predictions[rate].save_png_grid(out / f"grid_{rate}x.png", truth_fine, fine_times)
    from ..fileio import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps(
        {"videos": videos, "samples": samples, "sampler": sampler, "steps": steps, "dtype": dtype, "device": str(device),
         "gap_aware": predictor.model.gap_aware, "model_1x": one_x, "timing": timing,
         "at_4x_frame_rate": summary}, indent=2))
    print(f"{'':16s} {'PSNR grid':>9s} {'between':>8s} {'SSIM grid':>9s} {'between':>8s} {'motion':>7s} "
          f"{'frames/s':>9s}")
    rows = [("model 1x", {"psnr_on_grid": one_x["psnr_mean"], "ssim_on_grid": one_x["ssim_mean"]}, timing["1x"]),
            (f"model {rate}x", summary["model"], timing[f"{rate}x"]),
            ("copy-last", summary["copy_last"], None), ("blend of 1x", summary["blend"], None)]
    for name, row, speed in rows:
        between = (f"{row['psnr_between']:8.2f}" if "psnr_between" in row else f"{'':8s}",
                   f"{row['ssim_between']:8.3f}" if "ssim_between" in row else f"{'':8s}",
                   f"{row['motion']:7.2f}" if "motion" in row else f"{'':7s}")
        fps = f"{speed['frames_per_second']:9.2f}" if speed else ""
        print(f"{name:16s} {row['psnr_on_grid']:9.2f} {between[0]} {row['ssim_on_grid']:9.3f} {between[1]} "
              f"{between[2]} {fps}")
    print(f"(mean over samples; 'grid' = the integer frame times, 'between' = the in-between times of the {rate}x "
          f"prediction, scored against real in-between frames; copy-last repeats the last observed frame; blend of 1x "
          f"cross-fades the model's own 1x frames; motion = how far the content moves relative to the truth, 1.0 = "
          f"exact. The model at 1x: {one_x['psnr_mean'] - summary['copy_last']['psnr_on_grid']:+.2f} dB PSNR against "
          f"copy-last)")
    print(f"wrote {out}/prediction_1x.gif, prediction_{rate}x.gif, grid_1x.png, grid_{rate}x.png, metrics.json")
    return 0
