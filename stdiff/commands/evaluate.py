"""``stdiff evaluate``: score a checkpoint's predictions on a test set (resumable), JSON + CSV + PNG.

Every predicted frame that has a ground-truth frame (integer times inside the clip) is scored:
PSNR, SSIM, LPIPS (with ``--lpips``), inter-sample LPIPS and FVD (with ``--i3d``), as the mean over
samples and the best of S, per frame and averaged. Finished batches are recorded in
``<out>/state.json`` with the run's settings (checkpoint weights' SHA-256, data, times, sampler,
steps, samples, seed, batch size, dtype, device type, metric weight files); rerunning the same
command skips them, and a run with other settings is refused unless ``--overwrite`` is given.
One run at a time writes ``--out`` (:func:`stdiff.fileio.folder_lock`): a second is refused.
``--official-protocol`` samples as the official test script (first frame chosen with the ground
truth, see ``stdiff.official_protocol``) and scores with the official SSIM.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from . import add_loading_options

HELP = "evaluate a checkpoint on a test set: PSNR, SSIM, LPIPS, FVD, diversity (resumable)"


def build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="exported model folder, or a preset name (random weights)")
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic', a recipe ('kth', 'bair', 'smmnist', 'cityscapes', 'kitti') as NAME:ROOT, "
                             "or a path to videos / frame folders (default synthetic)")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="data split (default test)")
    parser.add_argument("--num-videos", type=int, default=None, help="evaluate only the first N clips")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--times", default=None, help="comma-separated future times, e.g. 5,5.5,6 (frame units)")
    when.add_argument("--num-frames", type=int, default=None,
                      help="future frames at --fps (default: the model's num_future)")
    parser.add_argument("--fps", type=float, default=1.0, help="predicted frames per frame interval (default 1)")
    parser.add_argument("--stride", type=int, default=None, metavar="S",
                        help="score between frames (the stride protocol): predict at S x the training frame rate "
                             "and score on-grid and in-between frames against the real ones, beside copy-last and "
                             "the blend of the model's own 1x frames; synthetic data is drawn at S x rate, videos "
                             "are read at their native rate (train with --frame-step S); writes stride.json/.csv")
    parser.add_argument("--samples", type=int, default=10, help="samples per video (default 10, as the paper)")
    parser.add_argument("--sampler", default="ddpm", help="ddpm, ddim, dpmpp or dpmpp3m (default ddpm)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (sampler default when omitted)")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per batch (default 4)")
    parser.add_argument("--lpips", default=None, help="AlexNet (torchvision or lpips) weight file for LPIPS")
    parser.add_argument("--lpips-heads", default=None, help="lpips linear heads file (alex.pth), if separate")
    parser.add_argument("--i3d", default=None, help="TorchScript I3D file (StyleGAN-V) for FVD")
    parser.add_argument("--official-protocol", action="store_true",
                        help="the official test protocol: per video, the first frame is chosen among "
                             "--first-frame-candidates by PSNR + SSIM against the ground truth and all --samples "
                             "trajectories continue from it; official SSIM (USES THE GROUND TRUTH, labelled as "
                             "such in the report)")
    parser.add_argument("--first-frame-candidates", type=int, default=10,
                        help="first-frame candidates per video under --official-protocol (default 10, as the "
                             "official configs)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--out", default="stdiff-eval", help="output folder (default ./stdiff-eval)")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard an earlier evaluation in --out made with other settings (default: resume "
                             "only when the settings match, refuse otherwise)")
    add_loading_options(parser)


def _query_times(args: argparse.Namespace, t_last: float, default_frames: int, max_frames: int) -> list[float]:
    from ..prediction import future_times
    from .predict import parse_times

    times = parse_times(args.times) if args.times is not None else None
    return future_times(times, args.num_frames, args.fps, t_last, default_frames, max_frames)


REPORT_FILES = ("state.json", "metrics.json", "metrics.csv", "metrics.png")


def _check_args(args: argparse.Namespace) -> None:
    for name in ("samples", "batch_size", "num_videos", "first_frame_candidates"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _sha256_file(path: str | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_weights(module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes), whatever file it came from."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _settings(args: argparse.Namespace, predictor, device, num_videos: int, query: list[float]) -> dict[str, Any]:
    """What decides the numbers of a run: a state made with other settings is not resumed."""
    from ..predictor import DEFAULT_STEPS

    data = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data
    return {
        "checkpoint_sha256": _sha256_weights(predictor.model), "data": data, "split": args.split,
        "num_videos": num_videos, "query_times": query, "samples": args.samples, "sampler": args.sampler,
        "steps": DEFAULT_STEPS.get(args.sampler) if args.steps is None else args.steps, "seed": args.seed,
        "batch_size": args.batch_size, "dtype": args.dtype, "device": device.type,
        "first_frame_candidates": args.first_frame_candidates if args.official_protocol else None,
        "lpips_sha256": [_sha256_file(args.lpips), _sha256_file(args.lpips_heads)],
        "i3d_sha256": _sha256_file(args.i3d),
    }


def _resume(evaluator, out: Path, overwrite: bool) -> None:
    """Continue the evaluation in ``out`` when its settings match; refuse otherwise (or discard it)."""
    state = out / "state.json"
    if overwrite:
        for name in REPORT_FILES:
            (out / name).unlink(missing_ok=True)
    elif state.exists():
        try:
            evaluator.load_state(state)
        except ValueError as exc:
            raise ValueError(f"--out {str(out)!r} holds another evaluation, not resumed: {exc}. Use another --out, "
                             f"or --overwrite to discard it") from exc


def _check_i3d(video, path: str, shape: tuple[int, ...], device) -> None:
    """Run the feature extractor once on blank videos of the evaluation's shape: fail before sampling."""
    import torch

    try:
        video(torch.zeros(shape, device=device))
    except Exception as exc:  # any failure of a user-provided model: name the file and the shape
        raise ValueError(f"--i3d {path} fails on videos of shape (N, T, C, H, W) = {shape}: {exc}") from exc


def _run_stride(args: argparse.Namespace, predictor) -> int:
    """The stride protocol (:mod:`stdiff.inbetween`): JSON summary + per-frame CSV in --out."""
    import csv
    import io

    import torch

    from ..data import build_dataset
    from ..fileio import atomic_write_text
    from ..inbetween import score_clips

    stride, cfg = args.stride, predictor.config
    if stride < 1:
        raise ValueError(f"--stride must be >= 1, got {stride}")
    if args.official_protocol or args.times is not None or args.num_frames is not None:
        raise ValueError("--stride predicts the model's horizon at S x frame rate: it takes no --times, "
                         "--num-frames or --official-protocol")
    synthetic = args.data == "synthetic"
    dataset = build_dataset(args.data, args.split, image_size=cfg.image_size,
                            num_observed=(cfg.num_observed - 1) * stride + 1, num_future=cfg.num_future * stride,
                            channels=cfg.channels, seed=args.seed, augment=False,
                            **({"rate": stride} if synthetic else {}))
    count = len(dataset) if args.num_videos is None else min(args.num_videos, len(dataset))
    clips = torch.stack([dataset[i] for i in range(count)])
    scores = score_clips(predictor, clips, cfg.num_observed, stride, cfg.num_future, args.samples, args.sampler,
                         args.steps, args.seed, batch_size=args.batch_size, progress=not args.no_progress)
    summary = scores.summary()
    out = Path(args.out)
    report = {"protocol": "stride", "stride": stride, "videos": count, "samples": args.samples,
              "sampler": args.sampler, "steps": args.steps, "seed": args.seed, "data": args.data,
              "summary": summary, "per_frame": scores.per_frame()}
    atomic_write_text(out / "stride.json", json.dumps(report, indent=1))
    rows = scores.per_frame()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "stride.csv", buffer.getvalue())
    print(f"stride protocol: {count} clips x {args.samples} samples at {stride}x frame rate")
    print(f"{'':10s} {'PSNR grid':>10s} {'between':>8s} {'SSIM grid':>10s} {'between':>8s} {'motion':>7s}")
    for method, row in summary.items():
        print(f"{method:10s} {row['psnr_on_grid']:10.2f} {row.get('psnr_between', float('nan')):8.2f} "
              f"{row['ssim_on_grid']:10.3f} {row.get('ssim_between', float('nan')):8.3f} {row['motion']:7.2f}")
    print(f"report: {out / 'stride.json'}, {out / 'stride.csv'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Evaluate while holding the lock of --out (one writer per folder)."""
    from ..fileio import check_output_dir, folder_lock

    _check_args(args)
    out = check_output_dir(args.out, "--out")
    with folder_lock(out, "--out"):
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from ..data import build_dataset
    from ..evaluation import Evaluator
    from ..official_protocol import predict_official
    from ..predictor import Predictor
    from ..training.distributed import resolve_device

    device = resolve_device(args.device)
    predictor = Predictor.from_pretrained(args.checkpoint, device=device, dtype=getattr(torch, args.dtype),
                                          trust_unverified=args.trust_unverified)
    if args.stride is not None:
        return _run_stride(args, predictor)
    cfg = predictor.config
    to = cfg.num_observed
    t_last = float(to - 1)
    query = _query_times(args, t_last, cfg.num_future, predictor.limits.max_frames)
    horizon = int(math.floor(query[-1])) - to + 1        # future ground-truth frames needed
    dataset = build_dataset(args.data, args.split, image_size=cfg.image_size, num_observed=to,
                            num_future=max(horizon, 1), channels=cfg.channels, seed=args.seed, augment=False)
    if args.num_videos is not None:
        dataset = Subset(dataset, range(min(args.num_videos, len(dataset))))
    # ground truth exists at the integer query times inside the clip
    scored = [i for i, t in enumerate(query) if float(t).is_integer() and to <= t <= to - 1 + horizon]
    if not scored:
        raise ValueError(f"no query time has a ground-truth frame (integer times {to}..{to - 1 + horizon}): {query}")
    if args.official_protocol and scored[0] != 0:
        raise ValueError(f"--official-protocol chooses the first predicted frame with its ground truth: the first "
                         f"query time must be an integer frame time in {to}..{to - 1 + horizon}, got {query[0]}")
    gt_index = [int(query[i]) for i in scored]

    lpips = video = None
    if args.lpips is not None:
        from ..metrics import load_lpips

        lpips = load_lpips(args.lpips, args.lpips_heads, device=device)
    if args.i3d is not None:
        from ..metrics import load_i3d

        video = load_i3d(args.i3d, device=device)
        _check_i3d(video, args.i3d, (2, to + len(scored), cfg.channels, cfg.image_size, cfg.image_size), device)
    evaluator = Evaluator([query[i] for i in scored], lpips=lpips, video_features=video,
                          protocol="official" if args.official_protocol else "honest", device=device,
                          settings=_settings(args, predictor, device, len(dataset), query))
    _resume(evaluator, out, args.overwrite)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    for batch_id, clips in enumerate(tqdm(loader, desc="evaluate", unit="batch", disable=args.no_progress)):
        if evaluator.is_done(batch_id):
            continue
        observed, future = clips[:, :to], clips[:, to:]
        truth = future[:, [t - to for t in gt_index]].to(device)
        sampling = dict(num_samples=args.samples, sampler=args.sampler, steps=args.steps, seed=args.seed + batch_id)
        if args.official_protocol:
            frames = predict_official(predictor, observed, query, truth[:, 0],
                                      num_candidates=args.first_frame_candidates, **sampling)
        else:
            frames = predictor.predict(observed, times=query, progress=False, **sampling).frames
        evaluator.update(frames[:, :, scored].float(), truth, batch_id=batch_id, observed=observed.to(device))
        evaluator.save_state(out / "state.json")
    paths = evaluator.write_report(out)
    results = evaluator.results()
    summary = {f"{metric}/{stat}": curve.get("average", curve) if isinstance(curve, dict) else curve
               for metric, entry in results["metrics"].items() for stat, curve in entry["statistics"].items()}
    print(json.dumps({"protocol": results["protocol"], "videos": results["num_videos"],
                      "samples": results["num_samples"], **summary}, indent=2, default=str))
    print("report: " + ", ".join(str(p) for p in paths.values()))
    return 0
