"""Microbenchmarks of the fused ops (``stdiff.ops``) on every available backend.

For each op, forward and forward+backward, at the shapes the 64 px and 128 px presets use (every
distinct SPADE site of the UNet, the Conv-GRU / SDE state) and batch 1/8/64, this measures the
median and p20/p80 time of the public function ``stdiff.ops.<op>(..., backend=...)`` for every
backend available on the device, plus ``torch.compile`` of the reference. Each row also records
the bytes a fused kernel must move (every input read once, every output written once), the
achieved GB/s, the bandwidth of a plain copy of the same number of bytes timed in the same rounds
(and the fraction of it reached), and the speed-up over the eager reference.

Backends are timed round-robin (A B A B ...) so that a shared machine's changing load affects
them alike. Rows start with ``stdiff.bench.common.COMMON_COLUMNS``; ``stdiff bench report`` renders them.

    stdiff bench ops                      # this machine, fp32 -> benchmarks/results/<device-slug>/ops.csv
    stdiff bench ops --device cuda --dtypes float32 bfloat16 float16
    stdiff bench ops --smoke              # seconds: tiny shapes, 1 repeat (CI)
    python benchmarks/ops.py --smoke      # the same, from a source checkout
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import ops
from ..config import preset
from ..ops import reference
from ..ops.cases import CASES, call, inputs
from ..ops.contract import OP_NAMES
from . import common
from .options import OP_DTYPES

DTYPES = {name: getattr(torch, name) for name in OP_DTYPES}
COMPILED = "reference-compiled"


@dataclass(frozen=True)
class OpCase:
    """One op call: ``op`` with ``variant`` (of its case table, stdiff.ops.cases) on (batch, C, H, W)
    tensors of a model site."""

    op: str
    variant: str
    site: str
    batch: int
    channels: int
    size: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.size, self.size)


#: op -> variants benchmarked: the ones the model uses (the case tables' ``benchmarked``)
VARIANTS: dict[str, tuple[str, ...]] = {op: CASES[op].benchmarked for op in OP_NAMES}


def model_sites(preset_names: list[str]) -> dict[str, list[tuple[str, int, int]]]:
    """{op: [(site label, channels, size)]}: the presets' UNet levels and motion state, one entry per
    distinct shape (labelled with every preset that uses it)."""
    shapes: dict[str, dict[tuple[int, int], list[str]]] = {op: {} for op in VARIANTS}
    for name in preset_names:
        cfg = preset(name)
        px = cfg.image_size
        for level, channels in enumerate(cfg.unet.block_out_channels):
            size = px // 2**level
            shapes["spade_norm"].setdefault((channels, size), []).append(f"{px}px unet")
        for op in (name for name in OP_NAMES if name != "spade_norm"):
            shapes[op].setdefault((cfg.motion_channels, cfg.motion_size), []).append(f"{px}px motion state")
    return {
        op: [(f"{'/'.join(dict.fromkeys(labels))} C{c}@{s}x{s}", c, s) for (c, s), labels in by_shape.items()]
        for op, by_shape in shapes.items()
    }


def build_cases(preset_names: list[str], batches: list[int], max_elements: int) -> list[OpCase]:
    cases = []
    for op, sites in model_sites(preset_names).items():
        for variant in VARIANTS[op]:
            for site, channels, size in sites:
                for batch in batches:
                    if batch * channels * size * size * (2 if op == "convgru_gates" else 1) <= max_elements:
                        cases.append(OpCase(op, variant, site, batch, channels, size))
    return cases


def smoke_cases() -> list[OpCase]:
    return [OpCase(op, variant, "smoke", 2, 8, 8) for op, variants in VARIANTS.items() for variant in variants]


# ---------------------------------------------------------------------------- op calls
def make_call(case: OpCase, dtype: torch.dtype, device: torch.device, grad: bool):
    """(inputs that get gradients, fn(backend_fn) -> outputs) for one case (the case table's inputs)."""
    kwargs = inputs(case.op, case.variant, case.shape, dtype, device, requires_grad=grad)
    args = [v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    return args, lambda fn: call(fn, kwargs)


def bytes_moved(case: OpCase, mode: str, itemsize: int) -> int:
    """Minimal DRAM traffic of the fused op: tensors read once + tensors written once (the case
    table's ``units`` of one (N, C, H, W) tensor)."""
    forward, backward = CASES[case.op].units(CASES[case.op].variants[case.variant])
    units = forward + (backward if mode == "fwd+bwd" else 0)
    return units * math.prod(case.shape) * itemsize


def backend_fns(case: OpCase, names: list[str], compiled: dict) -> dict[str, Callable]:
    fns = {name: (lambda *a, _b=name, **k: getattr(ops, case.op)(*a, backend=_b, **k)) for name in names}
    if COMPILED in compiled:
        key = (case.op, case.variant)
        if key not in compiled[COMPILED]:
            compiled[COMPILED][key] = torch.compile(getattr(reference, case.op), dynamic=True)
        fns[COMPILED] = compiled[COMPILED][key]
    return fns


def run_once(run, fn, leaves: list[torch.Tensor], mode: str, grads: list[torch.Tensor] | None):
    outs = list(run(fn))
    if mode == "fwd+bwd":
        torch.autograd.grad(outs, leaves, grads)
    return outs


# ---------------------------------------------------------------------------- timing and environment
def timings(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, budget_s: float):
    """Interleaved timings of every backend; repeats capped so that all take ~budget_s in total."""
    first = {}
    for name, fn in fns.items():  # warm-up (compiles torch.compile graphs) and one timed call
        fn()
        first[name] = common.measure(fn, device, repeats=1, warmup=0).median_ms
    repeats = max(1, min(repeats, int(budget_s * 1e3 / max(sum(first.values()), 1e-6))))
    return common.measure_interleaved(fns, device, repeats, warmup=0)


COPY = "copy"


def cpu_isa() -> str:
    ok, _ = ops.backend_status().get("cpu", (False, ""))
    return torch.ops.stdiff.cpu_isa() if ok else ""


def available_backends(device: torch.device) -> list[str]:
    status = ops.backend_status()
    names = ["reference"]
    if device.type == "cpu" and status["cpu"][0]:
        names.append("cpu")
    if device.type == "cuda":
        names += [name for name in ("cuda", "triton") if status[name][0]]
    return names


COLUMNS = common.COMMON_COLUMNS + (
    "device_type", "cpu_isa", "op", "variant", "mode", "dtype", "site", "batch", "shape", "backend",
) + common.TIMING_COLUMNS + ("bytes", "gbps", "copy_gbps", "pct_copy_bw", "speedup_vs_eager")


def table(rows: list[dict]) -> str:
    """Markdown table: one line per (op, variant, mode, dtype, shape) with each backend's median."""
    backends = sorted({r["backend"] for r in rows}, key=lambda b: (b != "reference", b))
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["op"], r["variant"], r["mode"], r["dtype"], r["shape"]), {})[r["backend"]] = r
    head = ["op", "variant", "mode", "dtype", "shape"] + [f"{b} ms" for b in backends]
    head += [f"{b} x" for b in backends if b != "reference"] + ["best % copy bw"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, by_backend in groups.items():
        cells = list(key) + [f"{by_backend[b]['median_ms']:.3f}" if b in by_backend else "" for b in backends]
        cells += [f"{by_backend[b]['speedup_vs_eager']:.2f}" if b in by_backend else "" for b in backends if b != "reference"]
        cells.append(f"{max(r['pct_copy_bw'] for r in by_backend.values()):.0f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def run_cli(args: argparse.Namespace) -> list[Path]:
    """Run with the options of ``stdiff bench ops`` (:mod:`stdiff.bench.options`); returns the CSV written."""
    device = common.resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.smoke:
        cases, repeats, budget = smoke_cases(), 1, 0.0
    else:
        limit = args.max_elements or (2**25 if device.type == "cpu" else 2**62)
        cases, repeats, budget = build_cases(args.presets, args.batches, limit), args.repeats, args.budget
    cases = [c for c in cases if args.ops is None or c.op in args.ops]
    backends = available_backends(device)
    compiled: dict = {} if (args.smoke or args.no_compile) else {COMPILED: {}}
    isa = cpu_isa()
    print(f"{common.device_name(device)}: backends {backends + list(compiled)}, {len(cases)} cases x {args.modes} "
          f"x {args.dtypes}", flush=True)
    rows: list[dict] = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for case in cases:
            for mode in args.modes:
                grad = mode == "fwd+bwd"
                leaves, run = make_call(case, dtype, device, grad)
                outs = run(getattr(reference, case.op))
                grads = [torch.randn_like(o) for o in outs] if grad else None
                del outs
                nbytes = bytes_moved(case, mode, torch.empty((), dtype=dtype).element_size())
                fns = {COPY: common.copy_fn(max(nbytes, 2), device)}  # timed in the same rounds as the backends
                for backend, fn in backend_fns(case, backends, compiled).items():
                    fns[backend] = lambda _fn=fn: run_once(run, _fn, leaves, mode, grads)
                    try:  # e.g. torch.compile unsupported here: report it and keep going
                        fns[backend]()
                    except Exception as exc:
                        print(f"  {case.op} {case.site} {backend}: failed ({type(exc).__name__}: {exc})", flush=True)
                        del fns[backend]
                results = timings(fns, device, repeats, budget)
                bandwidth = common.copy_gbps(max(nbytes, 2), results.pop(COPY))
                eager_ms = results["reference"].median_ms if "reference" in results else float("nan")
                env = common.environment("ops", device, args.smoke)
                for backend, timing in results.items():
                    gbps = nbytes / (timing.median_ms * 1e-3) / 1e9
                    rows.append({
                        **env, "device_type": device.type, "cpu_isa": isa, "op": case.op, "variant": case.variant,
                        "mode": mode, "dtype": dtype_name, "site": case.site, "batch": case.batch,
                        "shape": "x".join(map(str, case.shape)), "backend": backend, **timing.columns(),
                        "bytes": nbytes, "gbps": round(gbps, 3), "copy_gbps": round(bandwidth, 3),
                        "pct_copy_bw": round(100 * gbps / bandwidth, 1),
                        "speedup_vs_eager": round(eager_ms / timing.median_ms, 3),
                    })
                    print(f"  {case.op:14s} {case.variant:15s} {mode:7s} {dtype_name:8s} {rows[-1]['shape']:16s} "
                          f"{backend:18s} {timing.median_ms:9.3f} ms  {gbps:7.2f} GB/s  "
                          f"x{rows[-1]['speedup_vs_eager']}", flush=True)
                del leaves, grads, fns
    print(table(rows))
    out = common.results_dir(args, device) / "ops.csv"
    common.write_csv(out, rows, COLUMNS)
    print(f"wrote {len(rows)} rows to {out}")
    return [out]


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/ops.py [--smoke] [--out DIR] [--device DEV] ...``."""
    return common.main("ops", run_cli, argv)
