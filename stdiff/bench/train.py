"""Training throughput: one optimizer step of the official objective, per preset, dtype and op backend.

A step is what ``stdiff train`` does per batch (:meth:`STDiff.training_loss` on ``k`` random future
frames, backward, gradient clipping, AdamW, EMA), on a batch of random clips made beforehand (the
data pipeline is not timed). ``bfloat16`` runs the step under ``torch.autocast`` as ``--bf16`` does;
backend ``fused`` is the fused ops of the device (``backend="auto"``), ``reference`` pure PyTorch.
All variants of a preset are timed round-robin (A B A B ...), so a shared machine's load hits them
alike. Then one more step per variant runs under ``torch.profiler``: ``conv_share`` is the share
of the profiled self time spent in convolutions (forward and backward; CPU self time on a CPU,
device self time on a GPU).

``train.csv``: one row per (preset, dtype, backend): batch, k, median/p20/p80 ms per step,
steps/s, clips/s, conv_share.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..config import preset
from ..models import STDiff
from ..training.ema import EMA
from .common import (
    COMMON_COLUMNS, TIMING_COLUMNS, auto_backend, environment, measure_interleaved, resolve_device,
    results_dir, synchronize, write_csv,
)
from .common import main as common_main

__all__ = ["COLUMNS", "conv_share", "make_step", "run", "run_cli", "main"]

COLUMNS: tuple[str, ...] = COMMON_COLUMNS + (
    "preset", "image_size", "batch", "k", "dtype", "backend", "op_backend", *TIMING_COLUMNS,
    "steps_per_s", "clips_per_s", "conv_share",
)
#: profiler events that are convolutions (forward, backward, the oneDNN/cuDNN kernels), not the Conv-GRU ops
_CONV = re.compile(r"conv(olution)?(?!gru)|cudnn|mkldnn_conv|winograd|implicit_gemm", re.IGNORECASE)


def default_batch(preset_name: str, device: torch.device) -> int:
    """Clips per step when --batch-size is not given: the demo's 8 (tiny), 1 for kth64-sized models on a CPU."""
    return 8 if preset_name == "tiny" or device.type == "cuda" else 1


def make_step(model: STDiff, clips: Tensor, k: int, bf16: bool, seed: int = 0) -> Callable[[], None]:
    """One training step of ``model`` on ``clips`` (N, To+Tp, C, H, W) in [0, 1], as ``stdiff train`` does it."""
    to = model.config.num_observed
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6)
    ema = EMA(model, 0.9999, 0.75, 1.0)
    generator = torch.Generator(clips.device).manual_seed(seed)
    data = clips * 2 - 1
    model.train()

    def step() -> None:
        with torch.autocast(clips.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.training_loss(data[:, :to], data[:, to:], k=k, generator=generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)

    return step


def conv_share(step: Callable[[], None], device: torch.device) -> float:
    """Share of one profiled ``step()``'s self time spent in convolutions (see :data:`_CONV`)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        synchronize(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, attr) for e in events)
    conv = sum(getattr(e, attr) for e in events if _CONV.search(e.key))
    return conv / total if total > 0 else float("nan")


def _preset_rows(name: str, dtypes: Sequence[str], backends: Sequence[str], batch: int, k: int | None,
                 steps: int, device: torch.device, smoke: bool) -> list[dict[str, object]]:
    cfg = preset(name)
    k = cfg.train_future_k if k is None else k
    if not 1 <= k <= cfg.num_future:
        raise ValueError(f"--k must be in [1, {cfg.num_future}] for preset {name}, got {k}")
    gen = torch.Generator().manual_seed(0)
    clips = torch.rand(batch, cfg.num_observed + cfg.num_future, cfg.channels, cfg.image_size, cfg.image_size,
                       generator=gen).to(device)
    variants: dict[tuple[str, str], Callable[[], None]] = {}
    for backend in backends:
        for dtype in dtypes:
            torch.manual_seed(0)
            model = STDiff(cfg).to(device).set_backend("auto" if backend == "fused" else "reference")
            variants[(dtype, backend)] = make_step(model, clips, k, bf16=dtype == "bfloat16")
    timings = measure_interleaved({f"{d}/{b}": fn for (d, b), fn in variants.items()}, device, steps, warmup=1)
    rows = []
    for (dtype, backend), fn in variants.items():
        timing = timings[f"{dtype}/{backend}"]
        rows.append({
            **environment("train", device, smoke), "preset": name, "image_size": cfg.image_size, "batch": batch,
            "k": k, "dtype": dtype, "backend": backend,
            "op_backend": auto_backend(device) if backend == "fused" else "reference", **timing.columns(),
            "steps_per_s": round(1e3 / timing.median_ms, 4), "clips_per_s": round(batch * 1e3 / timing.median_ms, 4),
            "conv_share": round(conv_share(fn, device), 4),
        })
    return rows


def run(device: torch.device, out_dir: Path, presets: Sequence[str], dtypes: Sequence[str],
        backends: Sequence[str], batch: int | None, k: int | None, steps: int, smoke: bool) -> list[Path]:
    """Measure every preset into ``out_dir/train.csv`` (rewritten after each preset)."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if batch is not None and batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch}")
    if "bfloat16" in dtypes and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--dtypes bfloat16: {torch.cuda.get_device_name(device)} does not support bfloat16")
    path = Path(out_dir) / "train.csv"
    rows: list[dict[str, object]] = []
    for name in presets:
        size = batch if batch is not None else (1 if smoke else default_batch(name, device))
        rows += _preset_rows(name, dtypes, backends, size, k, steps, device, smoke)
        write_csv(path, rows, COLUMNS)
    return [path]


def run_cli(args: argparse.Namespace) -> list[Path]:
    device = resolve_device(args.device)
    steps = 1 if args.smoke and args.steps is None else (args.steps or 5)
    presets = args.presets or (["tiny"] if args.smoke else ["tiny", "kth64"])
    return run(device, results_dir(args, device), presets, args.dtypes, args.backends, args.batch_size,
               args.k, steps, args.smoke)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stdiff.bench.train [--presets ...] [--dtypes ...] [--backends ...] [--smoke] ...``."""
    return common_main("train", run_cli, argv)
