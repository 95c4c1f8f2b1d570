"""Parameter names of official STDiff checkpoints <-> this package's, in both directions.

The official ``STDiffDiffusers`` model (XiYe20/STDiffProject) names its parameters
``tde_model.*`` (motion encoder, Conv-GRU cell, SDE drift/diffusion nets) and
``diffusion_unet.*`` (the SPADE UNet). Ours keep every layer index and every UNet name; only
the module prefixes differ, so the mapping is a table of prefixes.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

__all__ = ["PREFIXES", "official_to_ours", "ours_to_official", "state_official_to_ours", "state_ours_to_official"]

#: (official prefix, our prefix); the rest of every name is identical.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("tde_model.motion_encoder.", "motion_encoder."),
    ("tde_model.conv_gru_cell.GateConv.", "conv_gru.gate_conv."),
    ("tde_model.conv_gru_cell.NewStateConv.", "conv_gru.candidate_conv."),
    ("tde_model.diff_unet.diff_unet_f.", "sde.drift."),
    ("tde_model.diff_unet.diff_unet_g.", "sde.diffusion."),
    ("diffusion_unet.", "unet."),
)


def _swap(key: str, source: int) -> str | None:
    for pair in PREFIXES:
        if key.startswith(pair[source]):
            return pair[1 - source] + key[len(pair[source]):]
    return None


def official_to_ours(key: str) -> str:
    """``"tde_model.conv_gru_cell.GateConv.weight"`` -> ``"conv_gru.gate_conv.weight"``.

    Raises ValueError for a name outside the official model's modules.
    """
    out = _swap(key, 0)
    if out is None:
        raise ValueError(f"{key!r} is not a parameter name of an official STDiff model "
                         f"(expected a prefix among {[p for p, _ in PREFIXES]})")
    return out


def ours_to_official(key: str) -> str:
    """``"unet.conv_in.weight"`` -> ``"diffusion_unet.conv_in.weight"``; ValueError for unknown names."""
    out = _swap(key, 1)
    if out is None:
        raise ValueError(f"{key!r} is not a parameter name of stdiff's STDiff "
                         f"(expected a prefix among {[q for _, q in PREFIXES]})")
    return out


def _convert(state: Mapping[str, Tensor], source: int) -> tuple[dict[str, Tensor], list[str]]:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of parameter names to tensors, got {type(state).__name__}")
    converted: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        new = _swap(key, source) if isinstance(key, str) else None
        if new is None:
            unmapped.append(str(key))
        else:
            converted[new] = value
    return converted, unmapped


def state_official_to_ours(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an official state dict; returns (our state dict, names that map to nothing)."""
    return _convert(state, 0)


def state_ours_to_official(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename our state dict to the official layout; returns (official state dict, unmapped names)."""
    return _convert(state, 1)
