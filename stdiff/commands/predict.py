"""``stdiff predict``: predict the future of a video file or a folder of frames with a checkpoint.

Reads ``--context`` frames starting at ``--start``, predicts ``--samples`` futures at ``--times``
(or ``--num-frames`` at ``--fps``) and writes ``prediction.gif``, ``grid.png``, one PNG per
predicted frame (``frames/video0_sample<s>_t<time>.png``) and ``prediction.npz`` (frames, times) to
``--out``. When the input continues past the context, its frames at the predicted integer
times are shown as ground truth and PSNR/SSIM are printed.

``--out`` is written as a whole (:func:`stdiff.fileio.atomic_dir`): a re-run replaces every file
of the previous run, and a killed run leaves the previous output intact. A folder holding
anything else is refused, and so is a folder another run is writing (:func:`stdiff.fileio.folder_lock`).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from . import add_loading_options

HELP = "predict future frames of a video file or frame folder with a trained checkpoint"
DTYPES = ("auto", "float32", "bfloat16", "float16")
OUTPUT_NAMES = ("prediction.gif", "grid.png", "frames", "prediction.npz")  # what a run writes into --out


def build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="exported model folder (config.json + model.safetensors), or a preset name (random "
                             "weights, for testing)")
    parser.add_argument("--input", required=True, help="video file (mp4, avi, ...) or folder of frame images")
    parser.add_argument("--start", type=int, default=0, help="index of the first context frame (default 0)")
    parser.add_argument("--context", type=int, default=None,
                        help="number of context frames (default: the model's num_observed)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--times", default=None,
                      help="comma-separated future times in frame units after the context (which is at "
                           "0..context-1), e.g. 4,4.5,5,7.25")
    when.add_argument("--num-frames", type=int, default=None,
                      help="number of future frames at --fps (default: the model's num_future)")
    parser.add_argument("--fps", type=float, default=1.0,
                        help="predicted frames per input frame interval with --num-frames (default 1; 4 = 4x)")
    parser.add_argument("--samples", type=int, default=1, help="samples (possible futures) per video (default 1)")
    parser.add_argument("--sampler", default="ddpm", help="ddpm, ddim, dpmpp or dpmpp3m (default ddpm)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 100 ddpm, 50 ddim, "
                                                                 "20 dpmpp)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="UNet precision (default auto: bfloat16 where the device computes it natively, else "
                             "float32; float32 with --reference; `stdiff info` says which)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default 0: torch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--reference", action="store_true",
                        help="run the plain reference algorithm (no cache, fp32, eager) instead of the fast path")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="refuse requests denoising more frames per trajectory (default: WorkLimits, 10000)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="refuse requests of more videos x samples (default: WorkLimits, 1024)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="refuse requests keeping more GB of frames and motion (default: WorkLimits, 8)")
    parser.add_argument("--out", default="stdiff-predict",
                        help="output folder, replaced as a whole; new, empty or an earlier output of this command "
                             "(default: ./stdiff-predict)")
    add_loading_options(parser)


def parse_times(text: str) -> list[float]:
    """"4,4.5,5" -> [4.0, 4.5, 5.0]; ValueError naming --times otherwise (also for nan/inf)."""
    try:
        times = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ValueError(f"--times must be comma-separated numbers, got {text!r}") from exc
    if not all(math.isfinite(t) for t in times):
        raise ValueError(f"--times must be finite numbers, got {text!r}")
    return times


def work_limits(args: argparse.Namespace):
    """The predictor's WorkLimits with the --max-* options applied."""
    import dataclasses

    from ..planning import WorkLimits

    given = {"max_frames": args.max_frames, "max_batch": args.max_batch,
             "max_memory_bytes": None if args.max_memory_gb is None else round(args.max_memory_gb * 2**30)}
    try:
        return dataclasses.replace(WorkLimits(), **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise ValueError(f"--max-frames, --max-batch and --max-memory-gb must be > 0: {exc}") from exc


def read_input(path: str | Path, first: int, count: int | None, image_size: int, channels: int):
    """Frames ``first .. first+count-1`` (all from ``first`` when count is None) of a video file or
    frame folder as (T, C, image_size, image_size) float32 in [0, 1] (centre crop + resize)."""
    from ..data import ClipTransform, index_video, list_frames, read_clip, read_frames

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--input {str(path)!r} does not exist")
    if not path.is_dir() and not path.is_file():
        raise ValueError(f"--input {str(path)!r} is not a regular file or folder (a pipe or device?): give a video "
                         "file or a folder of frame images")
    if first < 0:
        raise ValueError(f"--start must be >= 0, got {first}")
    if path.is_dir():
        files = list_frames(path)
        total = len(files)
    else:
        index = index_video(path)
        total = len(index)
    stop = total if count is None else min(total, first + count)
    if stop - first < 2:
        raise ValueError(f"--input {str(path)!r} has {total} frames: too few from --start {first} "
                         "(the context needs at least 2)")
    ids = list(range(first, stop))
    transform = ClipTransform(image_size, channels)
    if path.is_dir():
        return read_clip([files[i] for i in ids], transform)
    return transform(read_frames(index, ids))


def check_out(path: str) -> Path:
    """``--out`` as a Path; ValueError unless it is writable and holds nothing but an earlier run's output."""
    from ..fileio import check_output_dir

    out = check_output_dir(path, "--out")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in OUTPUT_NAMES and not (p.name.startswith(".") and p.name.endswith(".tmp")))
        if foreign:
            raise ValueError(f"--out {path!r} holds files this command did not write ({', '.join(foreign[:5])}): "
                             "choose a new or empty folder (the output folder is replaced as a whole)")
    return out


def write_outputs(out: Path, pred, truth) -> None:
    """Write the GIF, grid, frames and npz of ``pred`` into ``out``, replacing it atomically."""
    import numpy as np

    from ..fileio import atomic_dir

    with atomic_dir(out) as tmp:
        pred.save_gif(tmp / "prediction.gif", *truth)
        pred.save_png_grid(tmp / "grid.png", *truth)
        pred.save_frames(tmp / "frames")
        with open(tmp / "prediction.npz", "wb") as fh:
            np.savez_compressed(fh, frames=pred.frames.cpu().numpy(), times=np.asarray(pred.times))


def run(args: argparse.Namespace) -> int:
    """Predict while holding the lock of --out (one writer per folder)."""
    from ..fileio import folder_lock

    out = check_out(args.out)
    with folder_lock(out, "--out"):
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    from ..prediction import future_times
    from ..predictor import Predictor
    from ..training.distributed import resolve_device
    from .demo import set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    predictor = Predictor.from_pretrained(args.checkpoint, exact_reference=args.reference, compile=args.compile,
                                          device=device, dtype=args.dtype, trust_unverified=args.trust_unverified)
    predictor.limits = work_limits(args)
    cfg = predictor.config
    context = cfg.num_observed if args.context is None else args.context
    if context < 2:
        raise ValueError(f"--context must be >= 2, got {context}")
    times = parse_times(args.times) if args.times is not None else None
    # validates --times / --num-frames / --fps before any frame is read
    query = future_times(times, args.num_frames, args.fps, float(context - 1), cfg.num_future,
                         predictor.limits.max_frames)
    # ground truth is read up to the last time, at most as far as the work limits let a request reach
    last = min(query[-1], context - 1 + cfg.num_future * predictor.limits.max_frames)
    clip = read_input(args.input, args.start, max(context, int(math.floor(last)) + 1), cfg.image_size, cfg.channels)
    if clip.shape[0] < context:
        raise ValueError(f"--input has only {clip.shape[0]} frames from --start {args.start}; --context is {context}")
    observed, extra = clip[:context], clip[context:]
    pred = predictor.predict(observed, times=times, num_frames=args.num_frames, fps=args.fps,
                             num_samples=args.samples, sampler=args.sampler, steps=args.steps, seed=args.seed,
                             progress=not args.no_progress)
    truth_times = [float(context + k) for k in range(extra.shape[0])]
    from ..prediction import frame_key

    has_truth = not {frame_key(s) for s in truth_times}.isdisjoint(map(frame_key, pred.times))
    truth = (extra[None], truth_times) if has_truth else (None, None)
    write_outputs(out, pred, truth)
    print(f"predicted {pred.num_samples} sample(s) at {len(pred.times)} times "
          f"({pred.times[0]:g} .. {pred.times[-1]:g}) -> {out}")
    if has_truth:
        print(json.dumps({k: round(v, 4) for k, v in pred.score(*truth).items()}))
    return 0
