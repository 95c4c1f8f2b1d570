"""``stdiff info``: versions, devices, what dtype="auto" picks on each, and the op backends that are built and usable."""
from __future__ import annotations

import platform

import torch

from . import __version__
from .dtypes import auto_dtype, cpu_capabilities
from .ops import backend_status


def collect() -> dict[str, object]:
    """Versions, devices and backend availability as a JSON-serialisable dict."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # triton is optional
        triton_version = None
    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    choices = {device.split(" ")[0]: auto_dtype(device.split(" ")[0]) for device in devices}
    return {
        "stdiff": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "cpu": str(cpu_capabilities().get("cpu_name") or platform.processor() or "unknown"),
        "cpu_threads": torch.get_num_threads(),
        "devices": devices,
        "dtype_auto": {device: {"dtype": str(c.dtype).removeprefix("torch."), "reason": c.reason}
                       for device, c in choices.items()},
        "backends": {name: {"available": ok, "detail": reason} for name, (ok, reason) in backend_status().items()},
    }


def render(info: dict[str, object]) -> str:
    """Human-readable table of :func:`collect`."""
    keys = ("stdiff", "python", "torch", "torch_cuda", "triton", "cpu", "cpu_threads")
    lines = [f"{key:12s} {info[key]}" for key in keys]
    lines.append(f"{'devices':12s} {', '.join(info['devices'])}")
    lines.append("dtype auto (the UNet precision Predictor and the CLI use by default):")
    for device, choice in info["dtype_auto"].items():
        lines.append(f"  {device}: {choice['dtype']} ({choice['reason']})")
    lines.append("op backends:")
    for name, status in info["backends"].items():
        mark = "yes" if status["available"] else "no "
        lines.append(f"  {name:10s} {mark}  {status['detail']}")
    return "\n".join(lines)
