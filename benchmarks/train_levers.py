"""`python benchmarks/train_levers.py [--config benchmarks/tiny_demo.yaml] [--set KEY=VALUE] [--repeats 15]
[--out DIR] [--name NAME]`:
what each lever does to one training step of the CPU demo configuration, in one process.

Every variant is a real :class:`stdiff.training.loop._Trainer` of the configuration (model, AdamW,
LR schedule, EMA) with its own batch stream (the synthetic clips generated on the fly, as
``stdiff train`` does with ``workers: 0``); the variants are timed round-robin (A B A B ...), one
optimizer step at a time, so a shared machine's load hits them alike. Levers: ``channels_last``
(model weights in channels_last), ``bf16`` (autocast), ``batch16`` (16 clips per step instead of 8),
``compile`` (``torch.compile`` of the loss module; its compile time is reported separately),
``lr_sqrt2`` (the learning rate times sqrt(2), for a larger batch), ``warmup_half`` (half the LR
warm-up steps: the same warm-up in clips at twice the batch),
``no_data`` (clips made beforehand: the data pipeline's share of a step), ``no_onednn``
(convolutions without oneDNN: PyTorch's own im2col + GEMM kernels); levers joined by ``+``
(``compile+batch16``) act together.

Writes ``<--name>.csv`` (default ``train_levers``; median/p20/p80 ms per step, ms per clip, ratio of ms per clip to the
baseline, compile seconds) to ``--out`` (default ``benchmarks/results/<device-slug>``).
``--curve N`` instead trains every lever N steps (interleaved; the same initial weights, and for
the same batch size the same clips and loss draws) and writes the loss of every step against the
clips seen to ``<--name>_curve.csv``: a lever that changes the numerics must keep this curve.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from stdiff.bench.common import (
    COMMON_COLUMNS, TIMING_COLUMNS, default_out_dir, environment, measure_interleaved, write_csv,
)
from stdiff.training import TrainConfig
from stdiff.training.config import apply_overrides, load_yaml
from stdiff.training.distributed import DistInfo
from stdiff.training.loop import _Trainer, build_train_data
from stdiff.training.stream import batch_stream

COLUMNS = COMMON_COLUMNS + ("config", "lever", "batch", *TIMING_COLUMNS, "ms_per_clip", "ratio_to_baseline",
                            "compile_s")
CURVE_COLUMNS = COMMON_COLUMNS + ("config", "lever", "batch", "step", "clips_seen", "loss", "grad_norm")
LEVERS = ("baseline", "channels_last", "bf16", "batch16", "lr_sqrt2", "warmup_half", "compile", "no_data",
          "no_onednn")
#: lever -> the training config fields it sets, from the base config
CONFIG_OVERRIDES: dict[str, Callable[[TrainConfig], dict]] = {
    "bf16": lambda base: {"bf16": True},
    "batch16": lambda base: {"batch_size": 16},
    "lr_sqrt2": lambda base: {"lr": base.lr * 2 ** 0.5},
    "warmup_half": lambda base: {"warmup_steps": base.warmup() // 2},
    "channels_last": lambda base: {"channels_last": True},
    "compile": lambda base: {"compile": True},
}


def lever_name(text: str) -> str:
    """``text`` if it names a lever or a ``+``-joined combination of levers (argparse type)."""
    parts = text.split("+")
    unknown = [part for part in parts if part not in LEVERS]
    if unknown or len(set(parts)) != len(parts) or ("baseline" in parts and len(parts) > 1):
        raise argparse.ArgumentTypeError(f"levers must be one of {', '.join(LEVERS)} or several joined by '+' "
                                         f"(each once, baseline alone), got {text!r}")
    return text


def _variant(base: TrainConfig, lever: str, dataset) -> tuple[callable, int, float]:
    """(one training step, clips per step, compile seconds) of ``lever`` (``+``-joined levers act
    together) applied to ``base``."""
    parts = set(lever.split("+"))
    overrides = {key: value for part in parts if part in CONFIG_OVERRIDES
                 for key, value in CONFIG_OVERRIDES[part](base).items()}
    cfg = TrainConfig.from_dict({**base.to_dict(), **overrides})
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    trainer = _Trainer(cfg, info)
    batches = batch_stream(dataset, cfg.batch_size, cfg.seed, 0, 1, start=0, workers=0)
    if "no_data" in parts:
        batches = itertools.cycle([next(batches) for _ in range(4)])
    net = trainer.loss_net()
    trainer.model.train()
    compile_s = 0.0
    if cfg.compile:
        begin = time.perf_counter()
        trainer.train_step(net, batches)  # the first call compiles
        compile_s = time.perf_counter() - begin
    if "no_onednn" in parts:
        def step():
            with torch.backends.mkldnn.flags(enabled=False):
                return trainer.train_step(net, batches)
        return step, cfg.batch_size, compile_s
    return (lambda: trainer.train_step(net, batches)), cfg.batch_size, compile_s


def _curves(steps: dict, batches: dict, n: int, config: str, path: Path) -> Path:
    """Train every lever ``n`` steps round-robin; one row per (lever, step)."""
    env, rows = environment("train_levers_curve", torch.device("cpu"), False), []
    for step in range(1, n + 1):
        for lever, fn in steps.items():
            loss, grad_norm, _ = fn()
            rows.append({**env, "config": config, "lever": lever, "batch": batches[lever], "step": step,
                         "clips_seen": step * batches[lever], "loss": round(float(loss), 5),
                         "grad_norm": round(float(grad_norm), 4)})
        if step % 25 == 0 or step == n:
            write_csv(path, rows, CURVE_COLUMNS)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).parent / "tiny_demo.yaml"))
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), type=lever_name,
                        help="levers, or several joined by '+' to act together (e.g. compile+batch16)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--curve", type=int, default=0, help="train N steps per lever and write the loss curves")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the config for every lever, e.g. --set bf16=false (as stdiff train --set)")
    parser.add_argument("--name", default="train_levers", help="CSV file name without .csv")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    # every compiled variant of the one process shares the training loss's code objects, and each
    # specialises them again (weight layout, batch, the drawn subset of future frames)
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 1024
    data = apply_overrides({**load_yaml(args.config), "device": "cpu", "out": "unused"}, args.set)
    base = TrainConfig.from_dict(data)
    config = " ".join([Path(args.config).name, *args.set])
    dataset = build_train_data(base)
    levers = ["baseline", *[lever for lever in args.levers if lever != "baseline"]]
    steps, batches, compile_s = {}, {}, {}
    for lever in levers:
        steps[lever], batches[lever], compile_s[lever] = _variant(base, lever, dataset)
    out = Path(args.out) if args.out else default_out_dir(torch.device("cpu"), False)
    if args.curve:
        print(_curves(steps, batches, args.curve, config, out / f"{args.name}_curve.csv"))
        return 0
    timings = measure_interleaved(steps, torch.device("cpu"), args.repeats, warmup=2)
    per_clip = {lever: t.median_ms / batches[lever] for lever, t in timings.items()}
    env = environment("train_levers", torch.device("cpu"), False)
    rows = [{**env, "config": config, "lever": lever, "batch": batches[lever], **t.columns(),
             "ms_per_clip": round(per_clip[lever], 3),
             "ratio_to_baseline": round(per_clip[lever] / per_clip["baseline"], 3),
             "compile_s": round(compile_s[lever], 1)} for lever, t in timings.items()]
    print(write_csv(out / f"{args.name}.csv", rows, COLUMNS))
    for row in rows:
        print(f"{row['lever']:28s} {row['median_ms']:8.1f} ms/step {row['ms_per_clip']:7.2f} ms/clip "
              f"x{row['ratio_to_baseline']}  compile {row['compile_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
