"""LPIPS (Zhang et al. 2018, v0.1, AlexNet) between images in [0, 1], weights from local files only."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..checks import integer
from . import _weights
from ._validate import image_pair
from .alexnet import CHANNELS, AlexNetFeatures

# Input scaling of lpips v0.1, applied to images in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10
#: Smallest image side for which every AlexNet layer still has an output pixel.
MIN_SIZE = 31


class LPIPS(nn.Module):
    """Learned perceptual distance; randomly initialised until weights are loaded (see ``load_lpips``).

    forward(x, y): (..., C, H, W) floats in [0, 1] with C = 1 (repeated to RGB) or 3, same shape,
    on the module's device, H, W >= 31. Returns (...,) distances: 0 for equal inputs, >= 0 with the
    lpips heads (which are non-negative). Images are processed ``chunk_size`` at a time to bound memory.
    """

    def __init__(self, chunk_size: int = 256) -> None:
        super().__init__()
        self.chunk_size = integer("chunk_size", chunk_size, 1)
        self.backbone = AlexNetFeatures()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x, y = image_pair("x", x, "y", y)
        *lead, c, h, w = x.shape
        if c not in (1, 3):
            raise ValueError(f"x and y must have 1 or 3 channels (..., C, H, W), got C={c}")
        if h < MIN_SIZE or w < MIN_SIZE:
            raise ValueError(f"x and y must be at least {MIN_SIZE}x{MIN_SIZE} pixels for AlexNet LPIPS, got {h}x{w}")
        param = self.shift
        if x.device != param.device:
            raise ValueError(f"x and y must be on the LPIPS module's device ({param.device}), got {x.device}")
        x = x.reshape(-1, c, h, w).to(param.dtype).expand(-1, 3, -1, -1)
        y = y.reshape(-1, c, h, w).to(param.dtype).expand(-1, 3, -1, -1)
        out = [self._distance(xc, yc) for xc, yc in zip(x.split(self.chunk_size), y.split(self.chunk_size))]
        return torch.cat(out).reshape(lead)

    def _distance(self, x: Tensor, y: Tensor) -> Tensor:
        """(B, 3, H, W) pair in [0, 1] -> (B,)."""
        both = torch.cat([x, y]) * 2 - 1
        feats = self.backbone((both - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for f, head in zip(feats, self.heads):
            f = f / (f.square().sum(dim=1, keepdim=True).sqrt() + _NORM_EPS)
            fx, fy = f.chunk(2)
            total = total + head((fx - fy).square()).mean(dim=(1, 2, 3))
        return total


def load_lpips(backbone: str | Path | None = None, heads: str | Path | None = None, *,
               device: torch.device | str | None = None, chunk_size: int = 256) -> LPIPS:
    """An LPIPS module in eval mode, without gradients, from local weight files (never downloaded).

    backbone: a torchvision AlexNet state dict, a full lpips state dict, or an ``LPIPS.state_dict()``;
        None: torchvision's file in the local torch hub cache if present.
    heads: the lpips linear heads (``weights/v0.1/alex.pth`` of the lpips package); None: taken from
        the backbone file if it has them, else from an installed ``lpips`` package.
    Raises FileNotFoundError with instructions when a file cannot be found, ValueError when a file
    lacks the expected tensors.
    """
    path = Path(backbone) if backbone is not None else _weights.default_backbone_path()
    if path is None:
        raise FileNotFoundError(_weights.MISSING_BACKBONE)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS backbone file not found: {path}. {_weights.MISSING_BACKBONE}")
    state = _weights.read_state_dict(path, "LPIPS backbone")
    model = LPIPS(chunk_size=chunk_size)
    _load_part(model.backbone, _weights.backbone_part(state), path, "AlexNet backbone")

    head_state = _weights.heads_part(state)
    heads_path = path
    if heads is not None or not head_state:
        heads_path = Path(heads) if heads is not None else _weights.installed_heads_path()
        if heads_path is None:
            raise FileNotFoundError(_weights.MISSING_HEADS)
        if not heads_path.is_file():
            raise FileNotFoundError(f"LPIPS heads file not found: {heads_path}. {_weights.MISSING_HEADS}")
        head_state = _weights.heads_part(_weights.read_state_dict(heads_path, "LPIPS heads"))
    _load_part(model.heads, head_state, heads_path, "LPIPS linear heads")
    return model.requires_grad_(False).eval().to(device)


def _load_part(module: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{path} has no {what} weights (missing {', '.join(missing)})")
    for key, ref in expected.items():
        if state[key].shape != ref.shape:
            raise ValueError(f"{path}: {what} tensor {key} has shape {tuple(state[key].shape)}, "
                             f"expected {tuple(ref.shape)}")
    module.load_state_dict({k: state[k].float() for k in expected})
