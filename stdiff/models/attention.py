"""Spatial self-attention block of the diffusion UNet (diffusers-0.15 ``AttentionBlock`` semantics)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AttentionBlock"]


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual.

    ``out = (x + proj_attn(MHA(GroupNorm(x)))) / rescale_output_factor``, where the heads split
    the channels into ``channels // head_dim`` contiguous groups of ``head_dim`` (one head when
    ``head_dim`` is None, as in diffusers) and each head computes
    ``softmax(q k^T / sqrt(head_dim)) v`` (``scaled_dot_product_attention``).
    Parameter names (group_norm, query, key, value, proj_attn) follow diffusers.
    """

    def __init__(
        self,
        channels: int,
        head_dim: int | None,
        num_groups: int,
        eps: float,
        rescale_output_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if head_dim is not None and (head_dim <= 0 or channels % head_dim != 0):
            raise ValueError(
                f"head_dim must be a positive divisor of channels={channels}, got {head_dim}"
            )
        self.channels = channels
        self.num_heads = 1 if head_dim is None else channels // head_dim
        self.rescale_output_factor = float(rescale_output_factor)
        self.group_norm = nn.GroupNorm(num_groups, channels, eps=eps, affine=True)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.proj_attn = nn.Linear(channels, channels)

    def _heads(self, t: Tensor) -> Tensor:
        """(N, L, C) -> (N, heads, L, C // heads)."""
        n, length, _ = t.shape
        return t.view(n, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, C, H, W)."""
        n, c, h, w = x.shape
        tokens = self.group_norm(x).view(n, c, h * w).transpose(1, 2)  # (N, L, C)
        q = self._heads(self.query(tokens))
        k = self._heads(self.key(tokens))
        v = self._heads(self.value(tokens))
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, d), scale 1/sqrt(d)
        out = self.proj_attn(out.transpose(1, 2).reshape(n, h * w, c))
        out = out.transpose(1, 2).reshape(n, c, h, w) + x
        if self.rescale_output_factor != 1.0:
            out = out / self.rescale_output_factor
        return out
