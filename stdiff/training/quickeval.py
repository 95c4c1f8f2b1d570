"""Quick check of a trained model: one-step prediction MSE against "copy the last frame".

``python -m stdiff.training.quickeval runs/x/export --clips 256`` predicts the first future frame
(time To) of held-out clips (the synthetic test split by default) from the To observed frames and
prints the MSE (pixels in [0, 1]) of the model (single samples and the mean of ``--samples``
samples), of copying the last observed frame and of a blank (all-zero) frame.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import Tensor

from ..pipeline import sample

__all__ = ["one_step_mse", "load_ema_model", "held_out_clips", "emit", "main"]


@torch.no_grad()
def one_step_mse(model, clips: Tensor, sampler: str = "ddim", steps: int = 50, num_samples: int = 1,
                 batch_size: int = 32, seed: int = 0) -> dict[str, float]:
    """MSEs of one-step predictions on ``clips`` (N, T, C, H, W) in [0, 1], T >= To + 1.

    Returns (means over all pixels of all clips) ``model_mse`` (of single samples),
    ``model_mean_mse`` (of the per-pixel mean of ``num_samples`` samples), ``copy_last_mse``,
    ``blank_mse``, ``win_rate`` (fraction of clips where a single sample beats copy-last) and ``clips``.
    """
    to = model.config.num_observed
    if clips.ndim != 5 or clips.shape[1] < to + 1:
        raise ValueError(f"clips must be (N, T, C, H, W) with T >= To + 1 = {to + 1}, got {tuple(clips.shape)}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    model.eval()
    per_clip: dict[str, list[Tensor]] = {"model": [], "mean": [], "copy": [], "blank": []}
    for start in range(0, clips.shape[0], batch_size):
        batch = clips[start:start + batch_size].to(device)
        observed, target = batch[:, :to], batch[:, to]
        pred = sample(model, observed, [float(to)], num_samples, sampler, steps,
                      generator=generator).frames[:, :, 0]                     # (N, S, C, H, W) in [0, 1]
        per_clip["model"].append(((pred - target[:, None]) ** 2).flatten(2).mean(2).mean(1))
        per_clip["mean"].append(((pred.mean(1) - target) ** 2).flatten(1).mean(1))
        per_clip["copy"].append(((observed[:, -1] - target) ** 2).flatten(1).mean(1))
        per_clip["blank"].append((target ** 2).flatten(1).mean(1))
    m, avg, c, b = (torch.cat(per_clip[k]).cpu() for k in ("model", "mean", "copy", "blank"))
    return {"model_mse": m.mean().item(), "model_mean_mse": avg.mean().item(), "copy_last_mse": c.mean().item(),
            "blank_mse": b.mean().item(), "win_rate": (m < c).float().mean().item(), "clips": int(m.numel()),
            "num_samples": num_samples}


def load_ema_model(path: str, device: str = "cpu"):
    """An exported folder (config.json + model.safetensors) or a training checkpoint (its EMA weights)."""
    from ..checkpoint import is_pretrained_dir, load_pretrained
    from ..config import STDiffConfig
    from ..models import STDiff
    from .state import load_state

    if is_pretrained_dir(path):
        return load_pretrained(path, map_location=device)
    state = load_state(path)
    model = STDiff(STDiffConfig.from_dict(state.meta["model_config"]))
    model.load_state_dict(state.ema)
    return model.to(device)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m stdiff.training.quickeval", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="exported model folder, or a training checkpoint (uses its EMA weights)")
    parser.add_argument("--data", default="synthetic", help="held-out data (default: synthetic test split)")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--samples", type=int, default=1, help="samples per clip (their mean is scored too)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    model = load_ema_model(args.checkpoint, args.device)
    clips = held_out_clips(model.config, args.data, args.clips, 1, args.seed)
    begin = time.perf_counter()
    result = one_step_mse(model, clips, args.sampler, args.steps, args.samples, args.batch_size, args.seed)
    result.update(sampler=args.sampler, steps=args.steps, seconds=round(time.perf_counter() - begin, 1))
    return emit(result, args.json)


def held_out_clips(cfg, data: str, count: int, num_future: int, seed: int = 0) -> Tensor:
    """Up to ``count`` test clips (N, To + num_future, C, H, W) in [0, 1] of ``data`` for model config ``cfg``."""
    from ..data import build_dataset

    dataset = build_dataset(data, "test", image_size=cfg.image_size, num_observed=cfg.num_observed,
                            num_future=num_future, channels=cfg.channels,
                            num_videos=count if data == "synthetic" else None, seed=seed)
    return torch.stack([dataset[i] for i in range(min(count, len(dataset)))])


def emit(result: dict, json_path: str | None) -> dict:
    """Print ``result`` as JSON and also write it to ``json_path`` (atomically) when given; returns it."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        from ..fileio import atomic_write_text

        atomic_write_text(json_path, text + "\n")
    return result


if __name__ == "__main__":
    main()
