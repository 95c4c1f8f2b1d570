"""Benchmark CSVs of one device -> ``README.md`` (Markdown tables) and PNG charts in the same folder.

Reads what is there: ``ops*.csv`` (op microbenchmarks of ``stdiff bench ops``), ``sde.csv``,
``predict_<preset>.csv`` and ``predict_profile_<preset>.csv``; appends ``NOTES.md`` (hand-written
context: machine load, what ran, what is owed). Charts: speed-up per op and backend (one per
dtype), % of the measured copy bandwidth per op and backend (roofline-style), SDE speed-up over
torchsde, predictor frames/s per variant and the predictor's time shares.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from ..fileio import atomic_path, atomic_write_text
from .common import read_csv, resolve_device, results_dir
from .common import main as common_main

__all__ = ["render", "markdown_table", "run_cli", "main"]


Row = dict[str, str]

# op microbenchmark columns the report reads (stdiff bench ops writes them)
OPS_KEY = ("op", "variant", "mode", "dtype", "shape")
OPS_TABLE = ("op", "variant", "mode", "dtype", "site", "shape", "backend", "median_ms", "p20_ms", "p80_ms", "gbps",
             "copy_gbps", "pct_copy_bw", "speedup_vs_eager")
SDE_TABLE = ("preset", "state_shape", "batch", "frames", "steps", "solver", "op_backend", "median_ms", "p20_ms",
             "p80_ms", "speedup_vs_torchsde", "max_abs_diff")
PREDICT_TABLE = ("preset", "batch", "samples", "frames", "variant", "sampler", "steps", "dtype", "op_backend",
                 "median_ms", "frames_per_s", "speedup_vs_reference", "peak_mem_mib", "gflop", "tflops",
                 "pct_bf16_peak")
ENV_COLUMNS = ("device", "device_name", "torch", "triton", "cuda", "cpu_isa", "threads", "smoke", "plan")


def _fmt(value: str) -> str:
    """Numbers with 3-4 significant digits; other text as it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    if value.strip().lstrip("-").isdigit() or math.isnan(number):
        return value
    magnitude = abs(number)
    if magnitude >= 100:
        return f"{number:.0f}"
    if magnitude >= 10:
        return f"{number:.1f}"
    if magnitude >= 0.01 or magnitude == 0:
        return f"{number:.2f}" if magnitude >= 1 else f"{number:.3f}"
    return f"{number:.2e}"


def markdown_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A Markdown table of ``columns`` (those present in the rows) with formatted numbers."""
    present = [c for c in columns if rows and c in rows[0]]
    lines = ["| " + " | ".join(present) + " |", "|" + "---|" * len(present)]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in present) + " |" for row in rows]
    return "\n".join(lines)


def _environment(rows: Sequence[Row]) -> str:
    """One line: device, versions, dates and the load average range of a CSV's rows."""
    first = rows[0]
    parts = [f"{c} {first[c]}" for c in ENV_COLUMNS if c in first and first[c] != ""]
    dates = sorted(r["date"] for r in rows if r.get("date"))
    if dates:
        parts.append(f"measured {dates[0]} .. {dates[-1]}")
    loads = [float(r["load_avg_1m"]) for r in rows if r.get("load_avg_1m")]
    if loads:
        parts.append(f"load average (1 min) {min(loads):.2f} .. {max(loads):.2f}")
    return "; ".join(parts)


def _pivot(rows: Sequence[Row], key: Sequence[str], across: str,
           cell: Callable[[Row], str]) -> tuple[list[Row], list[str]]:
    """Rows grouped by ``key`` with one column per value of ``across`` holding ``cell(row)``."""
    groups: dict[tuple[str, ...], Row] = {}
    names: list[str] = []
    for row in rows:
        group = groups.setdefault(tuple(row[k] for k in key), {k: row[k] for k in key})
        group[row[across]] = cell(row)
        if row[across] not in names:
            names.append(row[across])
    return list(groups.values()), [*key, *names]


def _with_ratio(time_col: str, ratio_col: str) -> Callable[[Row], str]:
    return lambda row: f"{_fmt(row[time_col])} ({_fmt(row[ratio_col])}x)"


# ---- charts ---------------------------------------------------------------------------------------
def _bar_chart(path: Path, groups: list[str], series: dict[str, list[float]], ylabel: str, title: str,
               reference_line: float | None = None, log: bool = False, stacked: bool = False) -> Path:
    """Bars per group label, one per series side by side (or stacked); written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(series))
    width = 0.8 if stacked else 0.8 / n
    per_group = 0.6 if stacked else 0.45 * n
    fig, ax = plt.subplots(figsize=(min(40.0, max(6.0, per_group * len(groups) + 2)), 4.8))
    bottom = [0.0] * len(groups)
    for i, (name, values) in enumerate(series.items()):
        if stacked:
            clean = [0.0 if math.isnan(v) else v for v in values]
            ax.bar(range(len(groups)), clean, width, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, clean)]
        else:
            ax.bar([g + i * width for g in range(len(groups))], values, width, label=name)
    offset = 0.0 if stacked else width * (n - 1) / 2
    ax.set_xticks([g + offset for g in range(len(groups))])
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    if reference_line is not None:
        ax.axhline(reference_line, color="black", linewidth=0.8, linestyle="--")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


_LABEL_PREFIX = {"batch": "N=", "samples": "S=", "frames": "T="}


def _series(rows: Sequence[Row], key: Sequence[str], across: str,
            value: str) -> tuple[list[str], dict[str, list[float]]]:
    """Chart data: group labels from ``key``, one series per value of ``across`` (NaN where missing)."""
    table, names = _pivot(rows, key, across, lambda row: row[value])
    labels = [" ".join(_LABEL_PREFIX.get(k, "") + group[k] for k in key) for group in table]
    series = {name: [float(group[name]) if group.get(name, "") != "" else math.nan for group in table]
              for name in names[len(key):]}
    return labels, series


# ---- sections -------------------------------------------------------------------------------------
def _ops_section(folder: Path, rows: list[Row]) -> tuple[list[str], list[Path]]:
    table, columns = _pivot(rows, OPS_KEY, "backend", _with_ratio("median_ms", "speedup_vs_eager"))
    lines = ["## Op microbenchmarks (`ops*.csv`)", "", _environment(rows), "",
             "Median ms (speed-up over the eager reference) per backend:", "", markdown_table(table, columns), ""]
    charts: list[Path] = []
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        subset = [r for r in rows if r["dtype"] == dtype]
        key = ("op", "variant", "mode", "shape")
        labels, series = _series(subset, key, "backend", "speedup_vs_eager")
        charts.append(_bar_chart(folder / f"ops_speedup_{dtype}.png", labels, series, "speed-up vs eager reference",
                                 f"Fused ops ({dtype}): speed-up per backend (dashed: 1x)", reference_line=1.0,
                                 log=True))
        labels, series = _series(subset, key, "backend", "pct_copy_bw")
        charts.append(_bar_chart(folder / f"ops_bandwidth_{dtype}.png", labels, series,
                                 "% of measured copy bandwidth",
                                 f"Fused ops ({dtype}): achieved bandwidth (dashed: 85% target)", reference_line=85.0))
    lines += [f"![{c.stem}]({c.name})" for c in charts]
    lines += ["", "All rows:", "", markdown_table(rows, OPS_TABLE), ""]
    return lines, charts


def _sde_section(folder: Path, rows: list[Row]) -> tuple[list[str], list[Path]]:
    key = ("preset", "state_shape", "batch", "frames", "steps")
    table, columns = _pivot(rows, key, "solver", _with_ratio("median_ms", "speedup_vs_torchsde"))
    labels, series = _series(rows, ("preset", "batch", "frames"), "solver", "speedup_vs_torchsde")
    chart = _bar_chart(folder / "sde_speedup.png", labels, series, "speed-up vs torchsde",
                       "Motion-SDE solve (Euler-Heun): speed-up over torchsde.sdeint", reference_line=1.0)
    lines = ["## Motion-SDE solve vs torchsde (`sde.csv`)", "", _environment(rows), "",
             "Median ms per solve (speed-up over torchsde), same nets and Brownian increments:", "",
             markdown_table(table, columns), "", f"![sde speed-up]({chart.name})", "", "All rows:", "",
             markdown_table(rows, SDE_TABLE), ""]
    return lines, [chart]


def _predict_section(folder: Path, rows: list[Row], profile: list[Row]) -> tuple[list[str], list[Path]]:
    key = ("preset", "batch", "samples", "frames")
    table, columns = _pivot(rows, key, "variant", _with_ratio("frames_per_s", "speedup_vs_reference"))
    labels, series = _series(rows, key, "variant", "frames_per_s")
    charts = [_bar_chart(folder / "predict_fps.png", labels, series, "frames / s",
                         "Predictor.predict: frames per second per variant", log=True)]
    lines = ["## Predictor (`predict_<preset>.csv`)", "", _environment(rows), "",
             "Frames/s (speed-up over the reference path) per variant:", "", markdown_table(table, columns), "",
             f"![predict frames/s]({charts[0].name})", ""]
    if profile:
        share_key = ("preset", "batch", "samples", "frames", "variant", "clock")
        shares, share_columns = _pivot(profile, share_key, "component", lambda r: f"{100 * float(r['share']):.1f}%")
        labels, series = _series(profile, share_key[:5], "component", "share")
        charts.append(_bar_chart(folder / "predict_shares.png", labels, series, "share of prediction time",
                                 "Predictor.predict: time share per component (torch.profiler)", stacked=True))
        lines += ["Time share per component (torch.profiler; unet excludes its SPADE branch):", "",
                  markdown_table(shares, share_columns), "", f"![time shares]({charts[1].name})", ""]
    lines += ["All rows:", "", markdown_table(rows, PREDICT_TABLE), ""]
    return lines, charts


def render(folder: str | Path) -> list[Path]:
    """Write ``README.md`` and the charts for the CSVs in ``folder``; returns the files written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {str(folder)!r} does not exist")
    ops = sorted(folder.glob("ops*.csv"))
    sde = folder / "sde.csv"
    predict = sorted(p for p in folder.glob("predict_*.csv") if not p.name.startswith("predict_profile_"))
    profile = sorted(folder.glob("predict_profile_*.csv"))
    if not (ops or sde.exists() or predict):
        raise ValueError(f"no benchmark CSVs (ops*.csv, sde.csv, predict_<preset>.csv) in {str(folder)!r}")
    lines = [f"# Benchmark results: {folder.name}", "",
             "Generated by `stdiff bench report` from the CSVs in this folder; times in ms (median, "
             "p20/p80 over repeats), one row per measurement.", ""]
    charts: list[Path] = []
    sections: list[tuple[list[str], list[Path]]] = []
    if ops:
        sections.append(_ops_section(folder, [r for p in ops for r in read_csv(p)]))
    if sde.exists():
        sections.append(_sde_section(folder, read_csv(sde)))
    if predict:
        sections.append(_predict_section(folder, [r for p in predict for r in read_csv(p)],
                                         [r for p in profile for r in read_csv(p)]))
    for section_lines, section_charts in sections:
        lines += section_lines
        charts += section_charts
    notes = folder / "NOTES.md"
    if notes.exists():
        lines += ["## Notes", "", notes.read_text().strip(), ""]
    readme = folder / "README.md"
    atomic_write_text(readme, "\n".join(lines))
    return [readme, *charts]


def run_cli(args: argparse.Namespace) -> list[Path]:
    device = resolve_device(args.device)
    return render(results_dir(args, device))


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/report.py [--out DIR] [--device DEV] [--smoke]`` (the results folder to report)."""
    return common_main("report", run_cli, argv)
