"""``stdiff info``: versions, devices and the op backends that are built and usable."""
from __future__ import annotations

import platform

import torch

from . import __version__
from .ops import backend_status


def collect() -> dict[str, object]:
    """Versions, devices and backend availability as a JSON-serialisable dict."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # triton is optional
        triton_version = None
    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return {
        "stdiff": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "cpu_threads": torch.get_num_threads(),
        "devices": devices,
        "backends": {name: {"available": ok, "detail": reason} for name, (ok, reason) in backend_status().items()},
    }


def render(info: dict[str, object]) -> str:
    """Human-readable table of :func:`collect`."""
    lines = [f"{key:12s} {info[key]}" for key in ("stdiff", "python", "torch", "torch_cuda", "triton", "cpu_threads")]
    lines.append(f"{'devices':12s} {', '.join(info['devices'])}")
    lines.append("op backends:")
    for name, status in info["backends"].items():
        mark = "yes" if status["available"] else "no "
        lines.append(f"  {name:10s} {mark}  {status['detail']}")
    return "\n".join(lines)
