"""Reading LPIPS weight files from local paths (never from the network) and mapping their keys.

Accepted layouts, told apart by their key names:
- torchvision AlexNet state dict: ``features.{0,3,6,8,10}.{weight,bias}`` (``classifier.*`` ignored);
- full ``lpips`` package state dict: ``net.slice{1..5}.{i}.{weight,bias}`` + ``lin{k}.model.{0,1}.weight``;
- ``lpips`` linear heads only (the package's ``weights/v0.1/alex.pth``): ``lin{k}.model.{0,1}.weight``;
- this package's own ``LPIPS.state_dict()``: ``backbone.features.*`` + ``heads.{k}.weight``.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch
from torch import Tensor

#: File name torchvision gives the ImageNet AlexNet weights in the torch hub cache.
TORCHVISION_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
TORCHVISION_ALEXNET_URL = "https://download.pytorch.org/models/" + TORCHVISION_ALEXNET_FILE

_BACKBONE_KEY = re.compile(r"^(?:backbone\.)?features\.(\d+)\.(weight|bias)$")
_LPIPS_BACKBONE_KEY = re.compile(r"^net\.slice\d\.(\d+)\.(weight|bias)$")
_HEAD_KEYS = (re.compile(r"^lin(\d)\.model\.[01]\.weight$"), re.compile(r"^heads\.(\d)\.weight$"))


def read_state_dict(path: str | Path, what: str) -> dict[str, Tensor]:
    """Load a state dict (``torch.save`` file or ``.safetensors``) from a local file, on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or pickled code: say which file and why
        raise ValueError(f"{what} file {path} is not a readable state dict: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{what} file {path} must hold a dict of tensors (a state dict)")
    return state


def backbone_part(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The AlexNet trunk entries of ``state``, renamed to ``features.{i}.{weight,bias}``."""
    out = {}
    for key, value in state.items():
        m = _BACKBONE_KEY.match(key) or _LPIPS_BACKBONE_KEY.match(key)
        if m:
            out[f"features.{m.group(1)}.{m.group(2)}"] = value
    return out


def heads_part(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The LPIPS linear-head entries of ``state``, renamed to ``{k}.weight``."""
    out = {}
    for key, value in state.items():
        for pattern in _HEAD_KEYS:
            m = pattern.match(key)
            if m:
                out[f"{m.group(1)}.weight"] = value
    return out


def default_backbone_path() -> Path | None:
    """torchvision's AlexNet file in the local torch hub cache, if a previous download left it there."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_ALEXNET_FILE
    return path if path.is_file() else None


def installed_heads_path() -> Path | None:
    """``weights/v0.1/alex.pth`` of an installed ``lpips`` package (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "weights" / "v0.1" / "alex.pth"
        if path.is_file():
            return path
    return None


MISSING_BACKBONE = (
    "LPIPS needs ImageNet AlexNet weights and stdiff never downloads them. Provide a local file: "
    "a torchvision AlexNet state dict (" + TORCHVISION_ALEXNET_URL + ", fetched by you) or a full "
    "lpips state dict, passed as the backbone path; a copy in the torch hub cache "
    "(<TORCH_HOME>/hub/checkpoints/" + TORCHVISION_ALEXNET_FILE + ") is also found."
)
MISSING_HEADS = (
    "LPIPS needs its linear heads (the lpips package's weights/v0.1/alex.pth) and stdiff never "
    "downloads them. Pass the file as heads=PATH, use a full lpips state dict as the backbone file, "
    "or run `pip install lpips --no-deps` so they are found in the installed package."
)
