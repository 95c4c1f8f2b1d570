"""Launch-time facts shared by the Triton kernels: interpreter mode, block sizes, layouts.

The output layout rule is the op contract's (``stdiff.ops.contract.output_format``).

``INTERPRET`` is read once, when this module is imported, because ``triton.jit`` decides at
decoration time whether a kernel runs compiled (CUDA) or in the interpreter (CPU tensors).
"""
from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

# triton.knobs exists from Triton 3.4; older releases read the variable directly.
_knobs = getattr(triton, "knobs", None)
INTERPRET: bool = (
    bool(_knobs.runtime.interpret) if _knobs is not None else os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
)

# The interpreter runs one program at a time in numpy: few large blocks are fast
# (a 64^3 tensor takes 0.1 s with 16384-element blocks and seconds with 256).
INTERPRET_BLOCK: int = 1 << 16


def check_device(*tensors: Tensor) -> None:
    """Raise when a tensor cannot be handled by the active Triton mode."""
    for t in tensors:
        if t.device.type != "cuda" and not INTERPRET:
            raise RuntimeError(
                f"the triton backend needs CUDA tensors (got {t.device}); set TRITON_INTERPRET=1 "
                "before importing stdiff to run it on CPU tensors"
            )


def interpret_block(n: int) -> int:
    """Block size for ``n`` elements in the interpreter: one program when it fits."""
    return min(triton.next_power_of_2(max(n, 16)), INTERPRET_BLOCK)


def dense(tensors: list[Tensor | None], fmt: torch.memory_format) -> list[Tensor | None]:
    """Each tensor laid out in ``fmt`` (a no-op for tensors that already are); None stays None."""
    return [None if t is None else t.contiguous(memory_format=fmt) for t in tensors]
