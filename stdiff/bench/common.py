"""Shared benchmark helpers: CSV rows with the run's environment, timing, copy bandwidth, peak memory.

Every CSV row starts with :data:`COMMON_COLUMNS` (what ran where: device, versions, date, the
machine's load average at measurement time, threads, smoke mode). Times are in milliseconds:
CUDA events on GPU, ``time.perf_counter`` on CPU; each measurement reports the median and the
20th/80th percentiles of its repeats.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import torch

from ..checks import integer
from ..fileio import atomic_path
from ..training.distributed import resolve_device  # the one --device check, shared with the commands

__all__ = [
    "COMMON_COLUMNS", "TIMING_COLUMNS", "Case", "Plan", "Timing", "summarize", "measure", "measure_interleaved",
    "synchronize", "copy_fn", "copy_gbps", "copy_bandwidth", "resolve_device", "device_name", "device_slug",
    "environment", "auto_backend", "reset_peak_memory", "peak_memory_mib", "memory_in_use_mib", "write_csv",
    "read_csv", "default_out_dir", "results_dir", "main",
]

COMMON_COLUMNS: tuple[str, ...] = (
    "benchmark", "device", "torch", "triton", "cuda", "date", "load_avg_1m", "threads", "smoke",
)


SizeT = TypeVar("SizeT")


@dataclass(frozen=True)
class Case(Generic[SizeT]):
    """One model preset of a benchmark plan, measured at each of ``sizes`` (what a size holds is the
    benchmark's); each measurement times ``repeats`` runs after ``warmup`` untimed ones."""

    preset: str
    sizes: tuple[SizeT, ...]
    repeats: int
    warmup: int = 0


@dataclass(frozen=True)
class Plan(Generic[SizeT]):
    """A benchmark plan: its cases in run order and, for a benchmark that denoises, the denoising
    steps of each sampler."""

    cases: tuple[Case[SizeT], ...]
    steps: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Timing:
    """Summary of repeated timings in milliseconds."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    repeats: int

    def columns(self) -> dict[str, float | int]:
        """The CSV columns ``median_ms, p20_ms, p80_ms, repeats``."""
        return {"median_ms": round(self.median_ms, 4), "p20_ms": round(self.p20_ms, 4), "p80_ms": round(self.p80_ms, 4),
                "repeats": self.repeats}


TIMING_COLUMNS: tuple[str, ...] = ("median_ms", "p20_ms", "p80_ms", "repeats")


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linearly interpolated quantile of an ascending sequence (numpy's default method)."""
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples_ms: Iterable[float]) -> Timing:
    """Median and 20th/80th percentiles of timings (ms); ValueError when there are none."""
    ordered = sorted(float(s) for s in samples_ms)
    if not ordered:
        raise ValueError("samples_ms must hold at least one timing")
    return Timing(_quantile(ordered, 0.5), _quantile(ordered, 0.2), _quantile(ordered, 0.8), len(ordered))


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1,
            budget_s: float | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones (CUDA events on GPU).

    ``budget_s``: cap the repeats so that the timed calls take about this long (estimated from
    one extra untimed call); at least one call is always timed.
    """
    repeats, warmup = integer("repeats", repeats, 1), integer("warmup", warmup, 0)
    for _ in range(warmup):
        fn()
    synchronize(device)
    if budget_s is not None:
        begin = time.perf_counter()
        fn()
        synchronize(device)
        repeats = max(1, min(repeats, int(budget_s / max(time.perf_counter() - begin, 1e-9))))
    samples: list[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - begin) * 1e3)
    return summarize(samples)


def measure_interleaved(fns: Mapping[str, Callable[[], object]], device: torch.device, repeats: int,
                        warmup: int = 1) -> dict[str, Timing]:
    """Time several alternatives round-robin (A B A B ...) so that a shared machine's changing
    load affects them alike; per name the same statistics as :func:`measure`."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            timing = measure(fn, device, repeats=1, warmup=0)
            if i >= warmup:
                samples[name].append(timing.median_ms)
    return {name: summarize(values) for name, values in samples.items()}


def copy_fn(nbytes: int, device: torch.device) -> Callable[[], object]:
    """A device-to-device copy moving ``nbytes`` in total (nbytes/2 read, nbytes/2 written): the
    roofline of a memory-bound op moving the same bytes (time it with the op's own rounds)."""
    nbytes = integer("nbytes", nbytes, 2)
    src = torch.ones(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def copy_gbps(nbytes: int, timing: Timing) -> float:
    """GB/s of a :func:`copy_fn` copy of ``nbytes`` that took ``timing``."""
    return 2 * (nbytes // 2) / (timing.median_ms * 1e-3) / 1e9


def copy_bandwidth(nbytes: int, device: torch.device, repeats: int = 10, warmup: int = 2,
                   budget_s: float | None = None) -> tuple[float, Timing]:
    """GB/s of a :func:`copy_fn` copy of ``nbytes`` timed on its own, and its timing."""
    timing = measure(copy_fn(nbytes, device), device, repeats, warmup, budget_s)
    return copy_gbps(nbytes, timing), timing


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_name(device: torch.device) -> str:
    """"NVIDIA H100 80GB HBM3" on GPU; "<cpu model> (<n> cores)" on CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({_cpu_count()} cores)"


def device_slug(device: torch.device) -> str:
    """Folder name for a device's results, e.g. "nvidia-h100-80gb-hbm3" or "cpu-amd-epyc-2c"."""
    if device.type == "cuda":
        text = torch.cuda.get_device_name(device)
    else:
        text = f"cpu {_cpu_model()} {_cpu_count()}c"
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def environment(benchmark: str, device: torch.device, smoke: bool) -> dict[str, object]:
    """The :data:`COMMON_COLUMNS` of a row measured now on ``device``."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    return {
        "benchmark": benchmark,
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda or "",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else "",
        "threads": torch.get_num_threads(),
        "smoke": bool(smoke),
    }


def auto_backend(device: torch.device) -> str:
    """Name of the op backend that ``backend="auto"`` runs on ``device`` (STDIFF_BACKEND respected)."""
    from ..ops._dispatch import resolve

    module = resolve("auto", device.type).__name__
    return {"stdiff.ops.reference": "reference", "stdiff.ops._compiled": device.type,
            "stdiff.kernels": "triton"}.get(module, module)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator stats, or the process's RSS high-water mark)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets VmHWM of this process to its current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """(peak MiB since :func:`reset_peak_memory`, what was measured).

    CUDA: ``torch.cuda.max_memory_allocated`` ("cuda_max_allocated"). CPU: the process's resident
    set high-water mark ("cpu_rss_hwm": includes the model weights and the Python process), or
    NaN with "unavailable" where /proc is missing.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "cpu_rss_hwm"
    except OSError:
        pass
    return float("nan"), "unavailable"


def memory_in_use_mib(device: torch.device) -> float:
    """MiB in use now: CUDA memory allocated by tensors, or the process's resident set on CPU (NaN
    where /proc is missing)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> Path:
    """Write ``rows`` (each with exactly ``columns``) to ``path`` atomically; returns the path."""
    if not rows:
        raise ValueError("rows must not be empty")
    wanted = list(columns)
    for i, row in enumerate(rows):
        missing = [c for c in wanted if c not in row]
        extra = [c for c in row if c not in wanted]
        if missing or extra:
            raise ValueError(f"row {i} must have exactly the columns {wanted}; missing {missing}, unexpected {extra}")
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=wanted)
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def default_out_dir(device: torch.device, smoke: bool) -> Path:
    """``benchmarks/results/<device-slug>`` (``...-smoke`` in smoke mode), relative to the working directory."""
    return Path("benchmarks") / "results" / (device_slug(device) + ("-smoke" if smoke else ""))


def results_dir(args: argparse.Namespace, device: torch.device) -> Path:
    """``--out`` or :func:`default_out_dir`."""
    return Path(args.out) if args.out is not None else default_out_dir(device, args.smoke)


def main(name: str, run_cli: Callable[[argparse.Namespace], list[Path]], argv: Sequence[str] | None = None) -> int:
    """Script entry point of benchmark ``name``: parse its options, run, print the files written."""
    from .options import BENCHMARKS, build

    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=BENCHMARKS[name][1])
    build(name, parser)
    for path in run_cli(parser.parse_args(argv)):
        print(path)
    return 0
