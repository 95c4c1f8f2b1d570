"""``stdiff evaluate``: score a checkpoint's predictions on a test set (resumable), JSON + CSV + PNG.

Every predicted frame that has a ground-truth frame (integer times inside the clip) is scored:
PSNR, SSIM, LPIPS (with ``--lpips``), inter-sample LPIPS and FVD (with ``--i3d``), as the mean over
samples and the best of S, per frame and averaged. Finished batches are recorded in
``<out>/state.json``; rerunning the same command skips them.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

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
    parser.add_argument("--samples", type=int, default=10, help="samples per video (default 10, as the paper)")
    parser.add_argument("--sampler", default="ddpm", help="ddpm, ddim, dpmpp or dpmpp3m (default ddpm)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (sampler default when omitted)")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per batch (default 4)")
    parser.add_argument("--lpips", default=None, help="AlexNet (torchvision or lpips) weight file for LPIPS")
    parser.add_argument("--lpips-heads", default=None, help="lpips linear heads file (alex.pth), if separate")
    parser.add_argument("--i3d", default=None, help="TorchScript I3D file (StyleGAN-V) for FVD")
    parser.add_argument("--official-protocol", action="store_true",
                        help="keep, per video, the sample whose first frame is closest to the ground truth (the "
                             "official selection; USES THE GROUND TRUTH, labelled as such in the report)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--out", default="stdiff-eval", help="output folder (default ./stdiff-eval)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _query_times(args: argparse.Namespace, t_last: float, default_frames: int) -> list[float]:
    from ..prediction import future_times
    from .predict import parse_times

    times = parse_times(args.times) if args.times is not None else None
    return future_times(times, args.num_frames, args.fps, t_last, default_frames)


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from ..data import build_dataset
    from ..evaluation import Evaluator
    from ..predictor import Predictor
    from ..training.distributed import resolve_device

    for name in ("samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    device = resolve_device(args.device)
    predictor = Predictor.from_pretrained(args.checkpoint, device=device, dtype=getattr(torch, args.dtype))
    cfg = predictor.config
    to = cfg.num_observed
    t_last = float(to - 1)
    query = _query_times(args, t_last, cfg.num_future)
    horizon = int(math.floor(query[-1])) - to + 1        # future ground-truth frames needed
    dataset = build_dataset(args.data, args.split, image_size=cfg.image_size, num_observed=to,
                            num_future=max(horizon, 1), channels=cfg.channels, seed=args.seed, augment=False)
    if args.num_videos is not None:
        dataset = Subset(dataset, range(min(args.num_videos, len(dataset))))
    # ground truth exists at the integer query times inside the clip
    scored = [i for i, t in enumerate(query) if float(t).is_integer() and to <= t <= to - 1 + horizon]
    if not scored:
        raise ValueError(f"no query time has a ground-truth frame (integer times {to}..{to - 1 + horizon}): {query}")
    gt_index = [int(query[i]) for i in scored]

    lpips = video = None
    if args.lpips is not None:
        from ..metrics import load_lpips

        lpips = load_lpips(args.lpips, args.lpips_heads, device=device)
    if args.i3d is not None:
        from ..metrics import load_i3d

        video = load_i3d(args.i3d, device=device)
    evaluator = Evaluator([query[i] for i in scored], lpips=lpips, video_features=video,
                          protocol="official" if args.official_protocol else "honest", device=device)
    out = Path(args.out)
    state = out / "state.json"
    if state.exists():
        evaluator.load_state(state)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    for batch_id, clips in enumerate(tqdm(loader, desc="evaluate", unit="batch", disable=args.no_progress)):
        if evaluator.is_done(batch_id):
            continue
        observed, future = clips[:, :to], clips[:, to:]
        pred = predictor.predict(observed, times=query, num_samples=args.samples, sampler=args.sampler,
                                 steps=args.steps, seed=args.seed + batch_id, progress=False)
        truth = future[:, [t - to for t in gt_index]].to(device)
        evaluator.update(pred.frames[:, :, scored].float(), truth, batch_id=batch_id, observed=observed.to(device))
        evaluator.save_state(state)
    paths = evaluator.write_report(out)
    results = evaluator.results()
    summary = {f"{metric}/{stat}": curve.get("average", curve) if isinstance(curve, dict) else curve
               for metric, entry in results["metrics"].items() for stat, curve in entry["statistics"].items()}
    print(json.dumps({"protocol": results["protocol"], "videos": results["num_videos"],
                      "samples": results["num_samples"], **summary}, indent=2, default=str))
    print("report: " + ", ".join(str(p) for p in paths.values()))
    return 0
