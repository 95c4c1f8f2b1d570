"""Backends "cpu" and "cuda": the compiled ``torch.ops.stdiff.*`` kernels (csrc/).

``stdiff._C`` holds the op schemas and the CPU kernels; ``stdiff._C_cuda`` (optional) the CUDA
kernels. Both are loaded lazily by :func:`is_available`, which first checks that the running
torch is the one the libraries were built against (``stdiff/_C_build.json``, written by setup.py):
a C++ extension built for another torch version may crash, so it is never imported then.

On first load this module registers, for every op, the contract's fake (meta) implementation
used by ``torch.compile`` / ``opcheck`` (:data:`stdiff.ops.contract.FAKES`) and the double backward
(:mod:`stdiff.ops.backward`); the first-order autograd formulas (which call the ``*_backward`` ops)
are registered in C++ (csrc/autograd.cpp).
The op functions below take the same arguments as the public ``stdiff.ops`` functions and do
not validate them (the C++ launchers still check devices, dtypes and shapes).
"""
from __future__ import annotations

import importlib
import json
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from .backward import register_double_backward
from .contract import FAKES

__all__ = [
    "build_info",
    "convgru_gates",
    "convgru_update",
    "is_available",
    "sde_predict",
    "sde_step",
    "spade_norm",
]

_BUILD_INFO = Path(__file__).resolve().parent.parent / "_C_build.json"
_loaded = False  # set once stdiff._C is imported and the Python impls are registered
_REBUILD = "rebuild it with `pip install --no-build-isolation .` (or `python setup.py build_ext --inplace`)"


def build_info() -> dict[str, object] | None:
    """What setup.py recorded about the build (torch version, CUDA, archs), or None if unbuilt."""
    try:
        return json.loads(_BUILD_INFO.read_text())
    except (OSError, ValueError):
        return None


@lru_cache(maxsize=None)
def _load_cpu() -> tuple[bool, str]:
    info = build_info()
    if info is None:
        return False, f"stdiff._C is not built ({_BUILD_INFO.name} missing); {_REBUILD}"
    if info.get("torch") != torch.__version__:
        return False, f"stdiff._C was built for torch {info.get('torch')}, running torch {torch.__version__}; {_REBUILD}"
    try:
        importlib.import_module("stdiff._C")
    except Exception as exc:  # a broken build must degrade to another backend, not crash
        return False, f"import of stdiff._C failed: {exc}"
    try:
        _register_python_impls()
    except Exception as exc:
        return False, f"registering the fake impls of torch.ops.stdiff failed: {exc}"
    global _loaded
    _loaded = True
    return True, f"stdiff._C for torch {info['torch']}, {torch.ops.stdiff.cpu_isa()} CPU kernels"


@lru_cache(maxsize=None)
def _load_cuda() -> tuple[bool, str]:
    ok, reason = _load_cpu()
    if not ok:
        return ok, reason
    info = build_info() or {}
    if not info.get("cuda_built"):
        return False, "stdiff._C_cuda was not built (no nvcc, CPU-only torch or STDIFF_SKIP_CUDA_BUILD)"
    try:
        importlib.import_module("stdiff._C_cuda")
    except Exception as exc:
        return False, f"import of stdiff._C_cuda failed: {exc}"
    archs = info.get("cuda_arch_list") or "visible GPUs"
    if not torch.cuda.is_available():
        return False, f"stdiff._C_cuda built for CUDA {info.get('torch_cuda')} ({archs}), but no CUDA device is visible"
    return True, f"stdiff._C_cuda for CUDA {info.get('torch_cuda')} ({archs})"


def is_available(device_type: str = "cpu") -> tuple[bool, str]:
    """(usable, reason) for the kernels of ``device_type`` ("cpu" or "cuda")."""
    if device_type == "cuda":
        return _load_cuda()
    if device_type == "cpu":
        return _load_cpu()
    return False, f"no compiled kernels for device type {device_type!r}"


def _require() -> None:
    if _loaded:  # a plain global: torch.compile traces this check without a graph break
        return
    ok, reason = _load_cpu()
    if not ok:
        raise RuntimeError(f"stdiff compiled ops are unavailable: {reason}")


# ---------------------------------------------------------------------------- op functions
def convgru_gates(gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """gx, gh: (N, 2F, H, W); h: (N, F, H, W) -> (u, r * h), both (N, F, H, W)."""
    _require()
    return torch.ops.stdiff.convgru_gates(gx, gh, h)


def convgru_update(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool = False) -> Tensor:
    """All (N, F, H, W): ``(1 - u) h + tanh(cx + ch)`` (``standard``: ``... + u tanh(cx + ch)``)."""
    _require()
    return torch.ops.stdiff.convgru_update(cx, ch, u, h, standard)


def spade_norm(h: Tensor, gamma: Tensor, beta: Tensor, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """h, gamma, beta: (N, C, H, W); bias: (N, C) or None -> (N, C, H, W)."""
    _require()
    return torch.ops.stdiff.spade_norm(h, gamma, beta, bias, float(eps))


def sde_step(
    y: Tensor,
    f: Tensor,
    g: Tensor,
    dW: Tensor | None,
    dt: float,
    g_pred: Tensor | None = None,
    g_is_raw: bool = False,
    seed: int | None = None,
    offset: int = 0,
) -> Tensor:
    """``y + f dt + G dW`` (G = g, or (g + g_pred) / 2; tanh first when raw); all shaped like y."""
    _require()
    return torch.ops.stdiff.sde_step(y, f, g, dW, float(dt), g_pred, bool(g_is_raw), seed, int(offset))


def sde_predict(
    y: Tensor,
    g: Tensor,
    dW: Tensor | None,
    dt: float | None = None,
    g_is_raw: bool = False,
    seed: int | None = None,
    offset: int = 0,
) -> Tensor:
    """``y + G dW`` (G = g, or tanh(g) when raw); all shaped like y."""
    _require()
    return torch.ops.stdiff.sde_predict(y, g, dW, None if dt is None else float(dt), bool(g_is_raw), seed, int(offset))


# ---------------------------------------------------------------------------- Python registrations
def _register_python_impls() -> None:
    """Once per process: the contract's fake impls of all ops and the double backward (the
    autograd of the backward ops); first-order autograd is registered in C++ (csrc/autograd.cpp)."""
    for name, fake in FAKES.items():
        torch.library.register_fake(f"stdiff::{name}", fake)
    register_double_backward("stdiff")
