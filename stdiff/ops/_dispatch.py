"""Backend selection for the fused ops.

Backends are modules exposing the five op functions (no argument validation) and
``is_available() -> (ok, reason)``:

- ``reference``: ``stdiff.ops.reference`` (pure PyTorch, any device);
- ``cpu`` / ``cuda``: ``stdiff.ops._compiled`` (``torch.ops.stdiff.*`` from the C++/CUDA extension;
  its ``is_available(device_type)`` says whether kernels for that device type were built);
- ``triton``: ``stdiff.kernels`` (Triton custom ops; CPU tensors only under ``TRITON_INTERPRET=1``).

``backend="auto"`` tries ``cpu -> reference`` on CPU tensors and ``cuda -> triton -> reference`` on
CUDA tensors. The environment variable ``STDIFF_BACKEND`` (a user override, read once when
``stdiff.ops`` is imported into :data:`ENV_BACKEND`) replaces ``auto``; an explicit backend (e.g.
``STDiff.set_backend("reference")``) wins over it. A backend that ``auto`` skips because it is
missing triggers one warning per backend and process.
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch

BACKENDS: tuple[str, ...] = ("reference", "cpu", "cuda", "triton")
_MODULES: dict[str, str] = {
    "reference": "stdiff.ops.reference",
    "cpu": "stdiff.ops._compiled",
    "cuda": "stdiff.ops._compiled",
    "triton": "stdiff.kernels",
}
_AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "reference"),
    "cuda": ("cuda", "triton", "reference"),
}
_warned: set[str] = set()
#: ``STDIFF_BACKEND`` as read at import ("auto" when unset or empty); replaces backend="auto".
ENV_BACKEND: str = os.environ.get("STDIFF_BACKEND", "") or "auto"


def _devices_of(backend: str) -> tuple[str, ...]:
    if backend == "reference":
        return ("*",)
    if backend == "triton":
        interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
        return ("cuda", "cpu") if interpret else ("cuda",)
    return (backend,)


_loaded: dict[str, tuple[ModuleType | None, str]] = {}


def _load(backend: str) -> tuple[ModuleType | None, str]:
    """Import a backend module once; returns (module or None, reason). A plain dict memo (not
    lru_cache) so torch.compile traces a warm lookup without graph breaks."""
    if backend in _loaded:
        return _loaded[backend]
    try:
        module = importlib.import_module(_MODULES[backend])
    except Exception as exc:  # a broken optional backend must never break `import stdiff`
        _loaded[backend] = (None, f"import of {_MODULES[backend]} failed: {exc}")
        return _loaded[backend]
    ok, reason = module.is_available(backend) if backend in ("cpu", "cuda") else module.is_available()
    _loaded[backend] = ((module if ok else None), reason)
    return _loaded[backend]


def backend_status() -> dict[str, tuple[bool, str]]:
    """{backend: (available, reason)} for every known backend (used by ``stdiff info``)."""
    return {name: (_load(name)[0] is not None, _load(name)[1]) for name in BACKENDS}


def _check_device(backend: str, device_type: str) -> None:
    devices = _devices_of(backend)
    if "*" not in devices and device_type not in devices:
        hint = " (set TRITON_INTERPRET=1 to run Triton on CPU tensors)" if backend == "triton" else ""
        raise ValueError(
            f"backend={backend!r} cannot run on {device_type} tensors; it supports {', '.join(devices)}{hint}"
        )


def resolve(backend: str, device_type: str) -> ModuleType:
    """Return the backend module that should run an op on tensors of ``device_type``."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto" and ENV_BACKEND != "auto":
        if ENV_BACKEND not in BACKENDS:
            raise ValueError(f"the environment variable STDIFF_BACKEND must be unset, 'auto' or one of {BACKENDS}, "
                             f"got {ENV_BACKEND!r}")
        backend = ENV_BACKEND
    if backend == "auto":
        for name in _AUTO_ORDER.get(device_type, ("reference",)):
            module, reason = _load(name)
            if module is not None:
                return module
            if name not in _warned and not torch.compiler.is_compiling():
                _warned.add(name)
                warnings.warn(
                    f"stdiff: backend {name!r} unavailable ({reason}); falling back", RuntimeWarning, stacklevel=4
                )
        raise AssertionError("unreachable: the reference backend is always available")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    _check_device(backend, device_type)
    module, reason = _load(backend)
    if module is None:
        raise RuntimeError(f"backend={backend!r} is not available: {reason}")
    return module


def preload() -> None:
    """Import the backends ``auto`` may pick on this machine, so that the first op call inside
    ``torch.compile`` finds them loaded (an import cannot be traced)."""
    _load("reference")
    _load("cpu")
    if torch.cuda.is_available():
        _load("cuda")
        _load("triton")
