"""The UNet's precision: names, and what ``dtype="auto"`` picks on a device.

``auto`` picks bfloat16 only where the device computes it natively: on a CPU with AVX512-BF16 or
AMX-BF16 instructions (as ``torch.cpu.get_capabilities()`` reports them; without them bfloat16 is
emulated and several times slower than float32), on a GPU that supports bfloat16
(``torch.cuda.is_bf16_supported()``); float32 everywhere else.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

__all__ = ["DTYPE_NAMES", "DtypeChoice", "auto_dtype", "cpu_native_bf16", "resolve_dtype"]

#: The UNet precisions a predictor accepts, by name ("auto" besides them picks one per device).
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: CPU capability flags (``torch.cpu.get_capabilities()``) that compute bfloat16 natively.
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


class DtypeChoice(NamedTuple):
    """What ``auto`` picks on a device, and why (one sentence)."""

    dtype: torch.dtype
    reason: str


def cpu_capabilities() -> Mapping[str, object]:
    """The CPU's instruction-set flags as torch detects them (empty when this torch cannot tell)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    return get() if get is not None else {}


def cpu_native_bf16(capabilities: Mapping[str, object] | None = None) -> list[str]:
    """The flags among ``capabilities`` (default: this CPU's) that compute bfloat16 natively."""
    caps = cpu_capabilities() if capabilities is None else capabilities
    return [flag for flag in _CPU_BF16_FLAGS if caps.get(flag) is True]


def auto_dtype(device: str | torch.device = "cpu", capabilities: Mapping[str, object] | None = None) -> DtypeChoice:
    """The UNet precision ``auto`` picks on ``device`` (``capabilities``: CPU flags, for tests)."""
    device = torch.device(device)
    if device.type == "cuda":
        with torch.cuda.device(device):
            if torch.cuda.is_bf16_supported():
                return DtypeChoice(torch.bfloat16, f"{torch.cuda.get_device_name(device)} supports bfloat16")
        return DtypeChoice(torch.float32, f"{torch.cuda.get_device_name(device)} has no bfloat16 support")
    if device.type != "cpu":
        return DtypeChoice(torch.float32, f"no bfloat16 rule for device type {device.type!r}")
    flags = cpu_native_bf16(capabilities)
    if flags:
        return DtypeChoice(torch.bfloat16, f"the CPU computes bfloat16 natively ({', '.join(flags)})")
    return DtypeChoice(torch.float32, "the CPU has no native bfloat16 (no AVX512-BF16/AMX-BF16): "
                                      "bfloat16 would be emulated and slower than float32")


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """``dtype`` as a torch dtype: "auto" resolved for ``device``, a name from :data:`DTYPE_NAMES`, or a dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPE_NAMES.values():
        return dtype
    if dtype == "auto":
        return auto_dtype(device).dtype
    if isinstance(dtype, str) and dtype in DTYPE_NAMES:
        return DTYPE_NAMES[dtype]
    raise ValueError(f"dtype must be 'auto', one of {sorted(DTYPE_NAMES)} or the torch dtype, got {dtype!r}")
