"""Test configuration: Triton runs in its interpreter on CPU-only machines.

``TRITON_INTERPRET`` must be set before Triton kernels are imported, so it is set here, at
collection time. When the package is used from a source checkout without installation, the
top-level ``kernels/`` folder is mapped to ``stdiff.kernels`` exactly as setup.py installs it.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_ROOT = Path(__file__).resolve().parent.parent


def _map_source_kernels() -> None:
    import stdiff

    if importlib.util.find_spec("stdiff.kernels") is not None or not (_ROOT / "kernels" / "__init__.py").exists():
        return
    if Path(stdiff.__file__).resolve().parent != _ROOT / "stdiff":
        return  # an installed stdiff without kernels: test what is installed
    spec = importlib.util.spec_from_file_location(
        "stdiff.kernels", _ROOT / "kernels" / "__init__.py", submodule_search_locations=[str(_ROOT / "kernels")]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["stdiff.kernels"] = module
    spec.loader.exec_module(module)


_map_source_kernels()
