"""Is the motion pathway alive? Health numbers of a trained model's motion encoder and conditioning.

``python -m stdiff.training.diagnose runs/x/export --clips 64`` prints, on held-out clips:

- ``dead_fraction``: per activation of the motion encoder, the fraction of its outputs that are
  <= 0 (a ReLU unit that is off; for a leaky ReLU, on its small-slope side);
- ``motion_spread``: std across clips of the motion state at the last observed frame, divided by
  its RMS (0 when every clip gets the same motion: the encoder ignores its input);
- ``loss`` (the official, unweighted one) with the true motion, with zero motion and with another
  clip's motion (same noise and diffusion steps), and the relative increases ``zero_motion_gain`` / ``swapped_motion_gain``:
  how much the UNet relies on the motion (near 0: the motion pathway is dead).
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["motion_health", "main"]


def _dead_fractions(model, observed: Tensor) -> list[float]:
    """Fraction of outputs <= 0 of each activation module of the motion encoder."""
    fractions: list[float] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: fractions.append((out <= 0).float().mean().item()))
             for layer in model.motion_encoder.model if isinstance(layer, (nn.ReLU, nn.LeakyReLU))]
    try:
        model.motion_features(observed)
    finally:
        for hook in hooks:
            hook.remove()
    return fractions


def _loss_with(model, observed: Tensor, future: Tensor, seed: int,
               edit: Callable[[Tensor], Tensor] | None) -> float:
    """Training loss with the same noise and steps; ``edit`` replaces the UNet's motion input."""

    def replace_motion(_module, args, kwargs):
        kwargs["motion"] = edit(kwargs["motion"])
        return args, kwargs

    hook = model.unet.register_forward_pre_hook(replace_motion, with_kwargs=True) if edit else None
    try:
        generator = torch.Generator(observed.device).manual_seed(seed)
        return model.training_loss(observed, future, generator=generator).item()
    finally:
        if hook is not None:
            hook.remove()


@torch.no_grad()
def motion_health(model, clips: Tensor, repeats: int = 4, seed: int = 0) -> dict[str, object]:
    """Health numbers (see the module docstring) on ``clips`` (N, T, C, H, W) in [0, 1], N >= 2."""
    cfg = model.config
    to = cfg.num_observed
    if clips.ndim != 5 or clips.shape[0] < 2 or clips.shape[1] < to + cfg.num_future:
        raise ValueError(f"clips must be (N >= 2, T >= {to + cfg.num_future}, C, H, W), got {tuple(clips.shape)}")
    model.eval()
    frames = clips.to(next(model.parameters()).device) * 2 - 1
    observed, future = frames[:, :to], frames[:, to:to + cfg.num_future]
    state = model.encode_context(observed).float()
    spread = (state.std(0).pow(2).mean().sqrt() / state.pow(2).mean().sqrt().clamp_min(1e-12)).item()
    k = cfg.train_future_k  # the UNet's motion is (N*k, ...), clip-major: rolling by k swaps clips
    edits = {"true": None, "zero": torch.zeros_like, "swapped": lambda m: m.roll(k, 0)}
    config = model.config
    model.config = dataclasses.replace(config, loss_weighting="none")  # the official loss: comparable across runs
    try:
        losses = {name: sum(_loss_with(model, observed, future, seed + r, edit) for r in range(repeats)) / repeats
                  for name, edit in edits.items()}
    finally:
        model.config = config
    return {
        "clips": int(clips.shape[0]),
        "dead_fraction": [round(f, 4) for f in _dead_fractions(model, observed)],
        "motion_spread": round(spread, 4),
        "loss": {name: round(value, 5) for name, value in losses.items()},
        "zero_motion_gain": round(losses["zero"] / losses["true"] - 1, 4),
        "swapped_motion_gain": round(losses["swapped"] / losses["true"] - 1, 4),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    from .quickeval import emit, held_out_clips, load_ema_model

    parser = argparse.ArgumentParser(prog="python -m stdiff.training.diagnose", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="exported model folder, or a training checkpoint (uses its EMA weights)")
    parser.add_argument("--clips", type=int, default=64, help="held-out synthetic clips (default 64)")
    parser.add_argument("--repeats", type=int, default=4, help="loss evaluations per variant (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    model = load_ema_model(args.checkpoint)
    clips = held_out_clips(model.config, "synthetic", args.clips, model.config.num_future, args.seed)
    return emit(motion_health(model, clips, args.repeats, args.seed), args.json)

if __name__ == "__main__":
    main()
