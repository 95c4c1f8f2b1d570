"""End-to-end speed of ``Predictor.predict``: frames/s, peak memory, time shares and achieved TFLOP/s.

For each preset (random weights), batch N and samples S, four variants predict the same future
frames: ``reference`` (``exact_reference=True``: the official algorithm, SPADE maps recomputed at
every step, fp32, eager, op backend "reference", DDPM), ``fast`` (the fast exact path, fp32,
DDPM), ``fast_bf16`` (the UNet in bfloat16, DDPM) and ``fast_bf16_dpmpp`` (bfloat16 with
DPM-Solver++ 2M at a fifth of the DDPM steps, e.g. 20 vs 100).

``predict_<preset>.csv``: one row per (size, variant). Each variant predicts once first (warm-up:
lazy initialisation, CUDA-graph capture); ``peak_mem_mib`` is the weights of the model it uses
plus the peak growth of memory during that call (CUDA: allocated by tensors; CPU: resident set,
coarse). Then the variants are timed round-robin (so a shared machine's load hits them alike).
``gflop`` counts the matmul/conv/attention FLOPs the variant executes (``torch.utils.flop_counter``
on a meta-device copy of the model, exact for these layers); ``tflops`` is gflop over the median
time, ``pct_bf16_peak`` the share of the GPU's dense bf16 peak (:data:`BF16_PEAK_TFLOPS`).
``predict_profile_<preset>.csv``: one row per (size, variant, component) from ``torch.profiler``:
motion encoder, Conv-GRU, SDE solve, SPADE branch, UNet (without its SPADE branch) and the rest
(sampler arithmetic, copies), as time and share.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import STDiffConfig, preset
from ..models import STDiff
from ..models.motion import ConvGRU, MotionEncoder
from ..models.sde import time_grid
from ..models.unet_blocks import MotionCondModule
from ..predictor import Predictor
from .common import (
    COMMON_COLUMNS, TIMING_COLUMNS, Case, Plan, auto_backend, environment, measure_interleaved, memory_in_use_mib,
    peak_memory_mib, reset_peak_memory, resolve_device, results_dir, synchronize, write_csv,
)
from .common import main as common_main

__all__ = ["COLUMNS", "PROFILE_COLUMNS", "COMPONENTS", "PLANS", "VARIANTS", "BF16_PEAK_TFLOPS",
           "bf16_peak_tflops", "count_gflop", "profile_shares", "run", "run_cli", "main"]


COLUMNS: tuple[str, ...] = COMMON_COLUMNS + (
    "plan", "preset", "image_size", "batch", "samples", "frames", "variant", "sampler", "steps", "dtype",
    "spade_cache", "op_backend", *TIMING_COLUMNS, "frames_per_s", "speedup_vs_reference", "peak_mem_mib",
    "mem_kind", "gflop", "tflops", "bf16_peak_tflops", "pct_bf16_peak",
)
PROFILE_COLUMNS: tuple[str, ...] = COMMON_COLUMNS + (
    "plan", "preset", "batch", "samples", "frames", "variant", "clock", "component", "time_ms", "share",
)
COMPONENTS: tuple[str, ...] = ("motion_encoder", "conv_gru", "sde", "spade", "unet", "other")

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched in
#: this order against the device name.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0),
)


@dataclass(frozen=True)
class Variant:
    name: str
    exact_reference: bool
    dtype: torch.dtype
    sampler: str


VARIANTS: tuple[Variant, ...] = (
    Variant("reference", True, torch.float32, "ddpm"),
    Variant("fast", False, torch.float32, "ddpm"),
    Variant("fast_bf16", False, torch.bfloat16, "ddpm"),
    Variant("fast_bf16_dpmpp", False, torch.bfloat16, "dpmpp"),
)


@dataclass(frozen=True)
class Size:
    """N videos x S samples each, predicting ``frames`` frames (one chunk); ``profile``: also profile it."""

    batch: int
    samples: int
    frames: int
    profile: bool


#: "gpu": the issue's matrix (64 and 128 px, N in {1, 16}, S in {1, 10}, DDPM-100 vs
#: DPM-Solver++-20) sized for one device session: batch 1 predicts 10 frames, the large batches
#: fewer (frames/s is per frame; the ``frames`` column says what ran), and only the N=S=1 and
#: N=16, S=1 sizes are profiled. Run one preset per command with ``--preset``.
#: "cpu": what a shared 2-core machine runs in minutes (DDPM-10 vs DPM-Solver++-2, 2 frames;
#: 64 px at N=S=1 only, plus the tiny preset). "smoke": CI.
PLANS: dict[str, Plan[Size]] = {
    "gpu": Plan((
        Case("kth64", (Size(1, 1, 10, True), Size(1, 10, 10, False), Size(16, 1, 10, True), Size(16, 10, 2, False)),
             repeats=2),
        Case("cityscapes128", (Size(1, 1, 10, True), Size(1, 10, 2, False), Size(16, 1, 2, True),
                               Size(16, 10, 1, False)), repeats=2),
    ), steps={"ddpm": 100, "dpmpp": 20}),
    "cpu": Plan((
        Case("tiny", (Size(1, 1, 2, True), Size(1, 10, 2, True), Size(16, 1, 2, True)), repeats=2),
        Case("kth64", (Size(1, 1, 2, True),), repeats=1),
    ), steps={"ddpm": 10, "dpmpp": 2}),
    "smoke": Plan((Case("tiny", (Size(1, 1, 1, True),), repeats=1),), steps={"ddpm": 2, "dpmpp": 1}),
}


def bf16_peak_tflops(device: torch.device) -> float | None:
    """Dense bf16 peak of a known GPU (H100/H200/A100), None for others and for CPUs."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


# ---- FLOPs ----------------------------------------------------------------------------------------
def _flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@functools.lru_cache(maxsize=8)
def _piece_flops(config_json: str) -> tuple[int, int, int, int]:
    """FLOPs at batch 1 of (context encoding, one SDE net evaluation, SPADE branch, one cached UNet step)."""
    config = STDiffConfig.from_dict(json.loads(config_json))
    size, ch = config.image_size, config.channels
    with torch.device("meta"):
        model = STDiff(config)
        context = torch.empty(1, config.num_observed, ch, size, size)
        m = torch.empty(1, config.motion_channels, config.motion_size, config.motion_size)
        sample = torch.empty(1, 2 * ch, size, size)
    with torch.no_grad():
        cache = model.unet.compute_spade(m)
        return (_flops(lambda: model.encode_context(context)), _flops(lambda: model.sde.drift(m)),
                _flops(lambda: model.unet.compute_spade(m)), _flops(lambda: model.unet(sample, 500, spade=cache)))


def count_gflop(config: STDiffConfig, batch: int, samples: int, frames: int, steps: int, spade_cache: bool) -> float:
    """GFLOP (matmul/conv/attention) of one prediction of ``frames`` frames (one chunk).

    Counted per piece at batch 1 on a meta-device model and scaled (these FLOPs are linear in
    the batch): context encoding per video; per sample the Euler-Heun solve (3 net evaluations
    per step), and per frame the SPADE branch (once, or at every step without the cache) and
    ``steps`` UNet evaluations.
    """
    if not 1 <= frames <= config.num_future:
        raise ValueError(f"frames must be in [1, num_future={config.num_future}] (one chunk), got {frames}")
    encode, net, spade, unet = _piece_flops(config.to_json())
    t0 = float(config.num_observed - 1)
    sde_steps = len(time_grid(t0, t0 + frames, config.sde.dt)) - 1
    per_frame = steps * unet + (1 if spade_cache else steps) * spade
    return (batch * encode + batch * samples * (3 * sde_steps * net + frames * per_frame)) / 1e9


# ---- profile ----------------------------------------------------------------------------------------
#: Modules labelled by forward hooks; the library labels the SDE solve (``stdiff.sde``) and each
#: denoising step's UNet evaluation (``stdiff.unet``, CUDA-graph replays included) itself.
_MODULE_LABELS: tuple[tuple[type[nn.Module], str], ...] = (
    (MotionEncoder, "motion_encoder"), (ConvGRU, "conv_gru"), (MotionCondModule, "spade"),
)
_PREFIX = "stdiff."


@contextlib.contextmanager
def _labels(model: nn.Module) -> Iterator[None]:
    """Profiler labels ``stdiff.<component>`` around the model's modules (forward hooks, removed on exit)."""
    handles = []
    for module in model.modules():
        name = next((label for kind, label in _MODULE_LABELS if isinstance(module, kind)), None)
        if name is None:
            continue
        stack: list[torch.profiler.record_function] = []

        def pre(mod: nn.Module, args: object, label: str = name, stack: list = stack) -> None:
            stack.append(torch.profiler.record_function(_PREFIX + label).__enter__())

        def post(mod: nn.Module, args: object, out: object, stack: list = stack) -> None:
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _exclusive_times(events: Sequence[tuple[str, float, float, float]]) -> dict[str, float]:
    """Sum per label of each range's time minus the times of the labelled ranges directly inside it.

    events: (label, cpu start, cpu end, time on the reported clock); nesting is read from the CPU
    intervals (all labels are opened and closed on one thread).
    """
    ordered = sorted(events, key=lambda e: (e[1], -e[2]))
    exclusive = [e[3] for e in ordered]
    stack: list[int] = []
    for i, (_, start, _, time) in enumerate(ordered):
        while stack and start >= ordered[stack[-1]][2]:
            stack.pop()
        if stack:
            exclusive[stack[-1]] -= time
        stack.append(i)
    totals: dict[str, float] = {}
    for (label, *_), value in zip(ordered, exclusive):
        totals[label] = totals.get(label, 0.0) + value
    return totals


def profile_shares(predictor: Predictor, call: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Run ``call()`` (a prediction by ``predictor``) under torch.profiler; ms per :data:`COMPONENTS`.

    CPU: wall time of the labelled ranges. CUDA: kernel time launched inside them (CUDA-graph
    replays included). "other" is the time inside the prediction outside every component.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with _labels(predictor.model), profile(activities=activities) as prof:
        with record_function(_PREFIX + "predict"):
            call()
            synchronize(device)
    events = []
    for e in prof.events():
        if e.name.startswith(_PREFIX) and e.device_type == DeviceType.CPU:
            clock = e.device_time_total if device.type == "cuda" else e.time_range.elapsed_us()
            events.append((e.name[len(_PREFIX):], e.time_range.start, e.time_range.end, clock / 1e3))
    totals = _exclusive_times(events)
    out = {name: totals.get(name, 0.0) for name in COMPONENTS if name != "other"}
    out["other"] = totals.get("predict", 0.0)
    return out


# ---- run ------------------------------------------------------------------------------------------
def _weights_mib(model: nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def _size_rows(models: dict[torch.dtype, STDiff], case: Case[Size], size: Size, plan_name: str, plan: Plan[Size],
               device: torch.device, smoke: bool) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Rows of predict.csv (one per variant) and predict_profile.csv for one size of a case.

    Each variant first predicts once (warm-up: lazy initialisation, CUDA-graph capture; its peak
    memory is read then), then the variants are timed round-robin.
    """
    cfg = models[torch.float32].config
    shape = (size.batch, cfg.num_observed, cfg.channels, cfg.image_size, cfg.image_size)
    frames = torch.rand(shape, generator=torch.Generator().manual_seed(size.batch))
    steps = {v.name: plan.steps[v.sampler] for v in VARIANTS}
    predictors = {v.name: Predictor(models[v.dtype], exact_reference=v.exact_reference).to(device, v.dtype)
                  for v in VARIANTS}
    calls: dict[str, Callable[[], object]] = {
        v.name: functools.partial(predictors[v.name].predict, frames, num_frames=size.frames,
                                  num_samples=size.samples, sampler=v.sampler, steps=steps[v.name], seed=0,
                                  progress=False)
        for v in VARIANTS
    }
    memory: dict[str, float] = {}
    for v in VARIANTS:
        before = memory_in_use_mib(device)
        reset_peak_memory(device)
        calls[v.name]()
        synchronize(device)
        peak, memory_kind = peak_memory_mib(device)
        memory[v.name] = _weights_mib(models[v.dtype]) + max(0.0, peak - before)
    timings = measure_interleaved(calls, device, case.repeats, case.warmup)
    peak_tflops = bf16_peak_tflops(device)
    reference_ms = timings[VARIANTS[0].name].median_ms
    rows: list[dict[str, object]] = []
    profile_rows: list[dict[str, object]] = []
    for v in VARIANTS:
        timing = timings[v.name]
        gflop = count_gflop(cfg, size.batch, size.samples, size.frames, steps[v.name],
                            spade_cache=not v.exact_reference)
        tflops = gflop / timing.median_ms  # GFLOP / ms = TFLOP/s
        common = {**environment("predict", device, smoke), "plan": plan_name, "preset": case.preset,
                  "batch": size.batch, "samples": size.samples, "frames": size.frames, "variant": v.name}
        rows.append({
            **common, "image_size": cfg.image_size, "sampler": v.sampler, "steps": steps[v.name],
            "dtype": str(v.dtype).removeprefix("torch."), "spade_cache": not v.exact_reference,
            "op_backend": "reference" if v.exact_reference else auto_backend(device), **timing.columns(),
            "frames_per_s": round(size.batch * size.samples * size.frames / (timing.median_ms / 1e3), 4),
            "speedup_vs_reference": round(reference_ms / timing.median_ms, 4),
            "peak_mem_mib": round(memory[v.name], 1), "mem_kind": memory_kind, "gflop": round(gflop, 3),
            "tflops": round(tflops, 5), "bf16_peak_tflops": "" if peak_tflops is None else peak_tflops,
            "pct_bf16_peak": "" if peak_tflops is None else round(100 * tflops / peak_tflops, 3),
        })
        if size.profile:
            shares = profile_shares(predictors[v.name], calls[v.name], device)
            total = sum(shares.values())
            clock = "cuda" if device.type == "cuda" else "cpu"
            profile_rows += [{**common, "clock": clock, "component": name, "time_ms": round(shares[name], 3),
                              "share": round(shares[name] / total, 4) if total > 0 else 0.0} for name in COMPONENTS]
    return rows, profile_rows


def run(device: torch.device, out_dir: Path, smoke: bool, presets: Sequence[str] | None = None) -> list[Path]:
    """Run the plan for ``device`` ("smoke" when ``smoke``), only ``presets`` when given.

    Writes ``predict_<preset>.csv`` and ``predict_profile_<preset>.csv`` per preset, rewritten
    after every size so that an interrupted run keeps what it measured. Returns the paths.
    """
    plan_name = "smoke" if smoke else ("gpu" if device.type == "cuda" else "cpu")
    plan = PLANS[plan_name]
    cases = [c for c in plan.cases if presets is None or c.preset in presets]
    if not cases:
        raise ValueError(f"presets {list(presets or [])} are not in the {plan_name!r} plan "
                         f"({', '.join(c.preset for c in plan.cases)})")
    written: list[Path] = []
    for case in cases:
        with torch.random.fork_rng(devices=[]):  # random weights, seed 0
            torch.manual_seed(0)
            model = STDiff(preset(case.preset)).to(device).eval()
        models = {torch.float32: model, torch.bfloat16: copy.deepcopy(model)}  # the bf16 variants' UNet is cast
        rows: list[dict[str, object]] = []
        profile_rows: list[dict[str, object]] = []
        paths = [Path(out_dir) / f"predict_{case.preset}.csv", Path(out_dir) / f"predict_profile_{case.preset}.csv"]
        for size in case.sizes:
            size_rows, size_profile = _size_rows(models, case, size, plan_name, plan, device, smoke)
            rows += size_rows
            profile_rows += size_profile
            write_csv(paths[0], rows, COLUMNS)
            if profile_rows:
                write_csv(paths[1], profile_rows, PROFILE_COLUMNS)
        written += [p for p in paths if p.exists()]
        del model, models
    return written


def run_cli(args: argparse.Namespace) -> list[Path]:
    device = resolve_device(args.device)
    return run(device, results_dir(args, device), args.smoke, args.preset)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/predict.py [--smoke] [--out DIR] [--device DEV] [--preset NAME]``."""
    return common_main("predict", run_cli, argv)
