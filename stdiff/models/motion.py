"""Motion encoder on frame differences and the Conv-GRU that aggregates it (docs/architecture.md §1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..config import MOTION_ACTIVATIONS

__all__ = ["MotionEncoder", "ConvGRU"]


def _activation(name: str) -> nn.Module:
    if name not in MOTION_ACTIVATIONS:
        raise ValueError(f"activation must be one of {MOTION_ACTIVATIONS}, got {name!r}")
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(0.2)


class MotionEncoder(nn.Module):
    """CNN over frame differences: (B, C, H, W) -> (B, ch * 2**n_downs, H / 2**n_downs, W / 2**n_downs).

    5x5 conv C->ch + act; (n_downs - 1) x [max-pool 2, 5x5 conv doubling channels + act];
    max-pool 2, 7x7 conv doubling channels + act. Layer indices match the official ``model.*`` keys.
    ``activation``: "relu" (official) or "leaky_relu" (no parameters, so the keys are unchanged):
    small models trained at a high learning rate lose most ReLU units of this encoder (issue 13).
    """

    def __init__(self, in_channels: int, model_channels: int, n_downs: int, activation: str = "relu") -> None:
        super().__init__()
        if n_downs < 1:
            raise ValueError(f"n_downs must be >= 1, got {n_downs}")
        ch = model_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 5, padding=2), _activation(activation)]
        for _ in range(n_downs - 1):
            layers += [nn.MaxPool2d(2), nn.Conv2d(ch, 2 * ch, 5, padding=2), _activation(activation)]
            ch *= 2
        layers += [nn.MaxPool2d(2), nn.Conv2d(ch, 2 * ch, 7, padding=3), _activation(activation)]
        self.model = nn.Sequential(*layers)
        self.out_channels = 2 * ch

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class ConvGRU(nn.Module):
    """One Conv-GRU cell (3x3 convs) run over a sequence, with the input convs hoisted out of the loop.

    ``gate_conv`` (2F -> 2F) and ``candidate_conv`` (2F -> F) act on ``cat(x, h)``; their weights are
    split into an x part (one batched conv over all steps, with the bias) and an h part (sequential).
    Update: official ``h' = (1 - u) h + tanh(c)``, or the standard GRU with ``standard=True``.
    """

    def __init__(self, channels: int, standard: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.channels = channels
        self.standard = standard
        self.backend = backend
        self.gate_conv = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.candidate_conv = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def input_projections(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, F, H, W) -> gate (B, 2F, H, W) and candidate (B, F, H, W) input terms, biases included."""
        f = self.channels
        gx = F.conv2d(x, self.gate_conv.weight[:, :f], self.gate_conv.bias, padding=1)
        cx = F.conv2d(x, self.candidate_conv.weight[:, :f], self.candidate_conv.bias, padding=1)
        return gx, cx

    def step(self, gx: Tensor, cx: Tensor, h: Tensor | None) -> Tensor:
        """One recurrence step from precomputed input terms; ``h=None`` means the zero state."""
        f = self.channels
        if h is None:  # h = 0: the h-convs vanish and r*h = 0
            h = torch.zeros_like(cx)
            gh = torch.zeros_like(gx)
            u, rh = ops.convgru_gates(gx, gh, h, backend=self.backend)
            return ops.convgru_update(cx, torch.zeros_like(cx), u, h, standard=self.standard, backend=self.backend)
        gh = F.conv2d(h, self.gate_conv.weight[:, f:], padding=1)
        u, rh = ops.convgru_gates(gx, gh, h, backend=self.backend)
        ch = F.conv2d(rh, self.candidate_conv.weight[:, f:], padding=1)
        return ops.convgru_update(cx, ch, u, h, standard=self.standard, backend=self.backend)

    def forward(self, xs: Tensor, h: Tensor | None = None) -> Tensor:
        """xs: (N, T, F, H, W) inputs; h: (N, F, H, W) initial state or None (zeros). Returns the last state."""
        n, t = xs.shape[:2]
        gx, cx = self.input_projections(xs.flatten(0, 1))
        gx = gx.unflatten(0, (n, t))
        cx = cx.unflatten(0, (n, t))
        for i in range(t):
            h = self.step(gx[:, i], cx[:, i], h)
        return h

    def forward_unfused(self, xs: Tensor, h: Tensor | None = None) -> Tensor:
        """The official cell, literally (convs over concatenations, plain PyTorch): for parity tests."""
        for i in range(xs.shape[1]):
            x = xs[:, i]
            prev = torch.zeros_like(x) if h is None else h
            u, r = torch.sigmoid(self.gate_conv(torch.cat([x, prev], 1))).chunk(2, 1)
            c = torch.tanh(self.candidate_conv(torch.cat([x, r * prev], 1)))
            h = (1 - u) * prev + (u * c if self.standard else c)
        return h
