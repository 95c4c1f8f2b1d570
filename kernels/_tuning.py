"""Autotuning configurations (GPU) and the fixed launch path (interpreter).

All five ops are memory bound (a few flops per element read), so the configurations only
choose how much data each program moves. Little's law for HBM: H100 SXM (3.35 TB/s, 132 SMs)
and A100 (1.6-2 TB/s, 108 SMs) need roughly 20-40 KB of loads in flight per SM. 8-16 float32
elements per thread per tensor (two to four 16-byte vector loads) with 4-8 warps and two or
more resident programs per SM reach that on both; smaller blocks only help small tensors,
where they give more programs than SMs (the motion state is 64K elements per video, so a batch
of one gives 64 programs of 1024), and larger ones cost occupancy through registers.
"""
from __future__ import annotations

from typing import Callable

import triton

from ._runtime import INTERPRET, interpret_block

# Elementwise kernels (Conv-GRU gates/update, SDE step/predict, forward and backward):
# 1024/4 warps for small tensors (more programs than SMs), 2048/4 and 4096/8 warps for
# large ones (fewer, longer programs; 16 elements per thread hides HBM3 latency on Hopper).
ELEMENTWISE_CONFIGS: list[triton.Config] = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=4),
    triton.Config({"BLOCK": 4096}, num_warps=8),
]

# SPADE row-block kernels: a program handles ROWS = cdiv(TILE, BLOCK_HW) (n, c) rows of
# BLOCK_HW >= H*W elements, so tiny rows (4x4, 8x8 in the UNet's low levels) are batched and a
# 64x64 row is one program. TILE 2048/4 warps suits Ampere and the smaller rows; 4096/8 and
# 8192/16 warps keep 64x64 rows (4096) and larger tiles in registers on Hopper without spills
# (at most 16 float32 per thread per tensor).
ROWS_CONFIGS: list[triton.Config] = [
    triton.Config({"TILE": 2048}, num_warps=4),
    triton.Config({"TILE": 4096}, num_warps=8),
    triton.Config({"TILE": 8192}, num_warps=16),
]

# SPADE split-row kernels (rows longer than spade.SINGLE_PASS_MAX_HW): the chunk length is
# fixed on the host (it sizes the partial-statistics buffer shared by two kernels); only the
# warp count is tuned: 4 (Ampere, fewer registers per SM) or 8 (Hopper).
CHUNK_CONFIGS: list[triton.Config] = [
    triton.Config({}, num_warps=4),
    triton.Config({}, num_warps=8),
]


def autotuned(kernel: triton.JITFunction, configs: list[triton.Config], key: list[str]) -> Callable:
    """The autotuned launcher of ``kernel`` on GPUs; in the interpreter the kernel itself."""
    if INTERPRET:
        return kernel
    return triton.autotune(configs=configs, key=key)(kernel)


def launch_flat(kernel, tuned, n: int, *args, **constexprs) -> None:
    """Launch an elementwise kernel over ``n`` elements with meta-parameter ``BLOCK``.

    GPU: the autotuned launcher picks BLOCK; interpreter: one large fixed block.
    """
    if INTERPRET:
        block = interpret_block(n)
        kernel[(triton.cdiv(n, block),)](*args, BLOCK=block, **constexprs)
    else:
        tuned[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](*args, **constexprs)
