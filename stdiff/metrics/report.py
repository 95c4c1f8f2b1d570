"""Writing an evaluation report: JSON, CSV and a PNG plot of the per-frame curves, each atomically.

The report is the dict of ``stdiff.evaluation.Evaluator.results()``; its ``metrics`` map each
metric name to ``{"higher_is_better": bool | None, "statistics": {name: stat}}`` where a stat is
``{"per_frame": [...], "average": x}`` (a per-frame metric) or ``{"value": x}`` (a video-set
metric such as FVD).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ..fileio import atomic_path


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def to_json(report: dict[str, Any]) -> bytes:
    """The report as strict JSON (no NaN/inf)."""
    return (json.dumps(report, indent=2, allow_nan=False) + "\n").encode()


def to_csv(report: dict[str, Any]) -> bytes:
    """Long-format CSV: ``metric,statistic,frame,time,value``; ``frame`` is ``all`` for averages and set metrics."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "statistic", "frame", "time", "value"])
    times = report["times"]
    for metric, entry in report["metrics"].items():
        for stat, values in entry["statistics"].items():
            if "per_frame" in values:
                for i, (t, v) in enumerate(zip(times, values["per_frame"])):
                    writer.writerow([metric, stat, i, repr(t), repr(v)])
                writer.writerow([metric, stat, "all", "", repr(values["average"])])
            else:
                writer.writerow([metric, stat, "all", "", repr(values["value"])])
    return buf.getvalue().encode()


def to_png(report: dict[str, Any]) -> bytes:
    """One panel per per-frame metric, one curve per statistic, against the prediction times."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = {m: e for m, e in report["metrics"].items()
              if any("per_frame" in s for s in e["statistics"].values())}
    fig = Figure(figsize=(4.2 * max(len(curves), 1), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(curves), 1), squeeze=False)[0]
    for ax, (metric, entry) in zip(axes, curves.items()):
        for stat, values in entry["statistics"].items():
            ax.plot(report["times"], values["per_frame"], marker="o", markersize=3,
                    label=f"{stat.replace('_', ' ')} (avg {values['average']:.4g})")
        hib = entry["higher_is_better"]
        better = " (diversity)" if hib is None else " (higher is better)" if hib else " (lower is better)"
        ax.set_title(metric.upper().replace("_", " ") + better, fontsize=9)
        ax.set_xlabel("time (frames)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    title = f"{report['num_videos']} videos x {report['num_samples']} samples, protocol: {report['protocol']}"
    if report["uses_ground_truth"]:
        title += " (USES GROUND TRUTH to select samples)"
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_report(report: dict[str, Any], out_dir: str | Path, stem: str = "metrics") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` and ``<stem>.png`` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    return {
        "json": atomic_write(out / f"{stem}.json", to_json(report)),
        "csv": atomic_write(out / f"{stem}.csv", to_csv(report)),
        "png": atomic_write(out / f"{stem}.png", to_png(report)),
    }
