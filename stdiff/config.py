"""Model configurations and the named presets (official shapes for the 64 px and 128 px models)."""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MotionConfig", "SDEConfig", "UNetConfig", "STDiffConfig", "PRESETS", "preset", "preset_names"]

SDE_METHODS = ("euler_heun", "euler", "ode")
SDE_GRIDS = ("exact", "torchsde")
#: Weightings of the training loss over diffusion steps: "none" (official: plain L1 on the noise) or
#: "truncated_snr" (L1 on the noise times clamp(sqrt(1 / SNR_t), 1, loss_weight_cap), normalised to mean 1:
#: the square root, for L1, of Salimans & Ho's truncated-SNR weighting, capped).
LOSS_WEIGHTINGS = ("none", "truncated_snr")
#: Motion-encoder activations: the official ReLU, or a leaky ReLU (slope 0.2) whose units cannot die.
MOTION_ACTIVATIONS = ("relu", "leaky_relu")
#: How the frame generator learns the time gap between a target frame and its conditioning frame:
#: "none" (official: gap-blind, SPADE on the motion state at the target time) or "scaled_motion"
#: (SPADE on gap * motion state: the motion state acts as a velocity, the UNet sees the displacement
#: since its conditioning frame; gap 0 is no motion). Gap-aware models condition in-between frames on
#: the last frame of the integer grid (``STDiff.conditioning_sources``).
GAP_CONDITIONINGS = ("none", "scaled_motion")


@dataclass
class MotionConfig:
    """Motion encoder on frame differences + Conv-GRU (docs/architecture.md §1).

    The motion state has ``model_channels * 2**n_downs`` channels at ``image_size / 2**n_downs``.
    ``activation``: "relu" (official) or "leaky_relu" (for small models trained fast: no dead units).
    """

    model_channels: int = 64
    n_downs: int = 2
    standard_gru: bool = False
    activation: str = "relu"


@dataclass
class SDEConfig:
    """Drift/diffusion nets and the fixed-step solver (docs/architecture.md §4)."""

    n_layers: int = 2
    method: str = "euler_heun"
    dt: float = 0.1
    #: "exact": off-grid frames by Brownian-bridge side steps, independent of the other times asked;
    #: "torchsde": the official float32 loop with linear interpolation (number-for-number parity).
    grid: str = "exact"


@dataclass
class UNetConfig:
    """SPADE UNet (diffusers-0.15 layout). ``attention_head_dim`` has one entry per block."""

    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 256, 512, 512])
    down_block_types: list[str] = field(
        default_factory=lambda: ["DownBlock2D"] + ["AttnDownBlock2D"] * 4
    )
    up_block_types: list[str] = field(default_factory=lambda: ["AttnUpBlock2D"] * 4 + ["UpBlock2D"])
    attention_head_dim: list[int | None] = field(default_factory=lambda: [None, 128, 128, 128, 128])
    layers_per_block: int = 2
    norm_num_groups: int = 32


@dataclass
class STDiffConfig:
    """Everything needed to build an :class:`stdiff.models.STDiff`, plus clip-length defaults."""

    image_size: int = 64
    channels: int = 3
    motion: MotionConfig = field(default_factory=MotionConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_observed: int = 5
    num_future: int = 10
    train_future_k: int = 6
    loss_weighting: str = "none"
    loss_weight_cap: float = 5.0
    gap_conditioning: str = "none"
    #: training only: probability that a target is replaced by its own conditioning frame (gap 0, the
    #: identity as an anchor for the in-between gaps a model trained on integer frames never sees)
    gap_zero_prob: float = 0.0

    @property
    def motion_channels(self) -> int:
        return self.motion.model_channels * 2**self.motion.n_downs

    @property
    def motion_size(self) -> int:
        return self.image_size // 2**self.motion.n_downs

    def validate(self) -> "STDiffConfig":
        """Raise ValueError naming the first inconsistent field; returns self."""
        if self.image_size < 8 or self.image_size % 2**self.motion.n_downs:
            raise ValueError(f"image_size must be >= 8 and divisible by 2**motion.n_downs, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        if not isinstance(self.loss_weight_cap, (int, float)) or not self.loss_weight_cap >= 1:
            raise ValueError(f"loss_weight_cap must be a number >= 1, got {self.loss_weight_cap!r}")
        if self.gap_conditioning not in GAP_CONDITIONINGS:
            raise ValueError(f"gap_conditioning must be one of {GAP_CONDITIONINGS}, got {self.gap_conditioning!r}")
        if isinstance(self.gap_zero_prob, bool) or not isinstance(self.gap_zero_prob, (int, float)) \
                or not 0 <= self.gap_zero_prob < 1:
            raise ValueError(f"gap_zero_prob must be a number in [0, 1), got {self.gap_zero_prob!r}")
        if self.gap_zero_prob and self.gap_conditioning == "none":
            raise ValueError("gap_zero_prob > 0 needs a gap-aware model (gap_conditioning != 'none')")
        if self.motion.activation not in MOTION_ACTIVATIONS:
            raise ValueError(f"motion.activation must be one of {MOTION_ACTIVATIONS}, got {self.motion.activation!r}")
        if self.sde.method not in SDE_METHODS:
            raise ValueError(f"sde.method must be one of {SDE_METHODS}, got {self.sde.method!r}")
        if self.sde.grid not in SDE_GRIDS:
            raise ValueError(f"sde.grid must be one of {SDE_GRIDS}, got {self.sde.grid!r}")
        if not self.sde.dt > 0:
            raise ValueError(f"sde.dt must be > 0, got {self.sde.dt}")
        n_blocks = len(self.unet.block_out_channels)
        if not n_blocks or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                   for c in self.unet.block_out_channels):
            raise ValueError(f"unet.block_out_channels must be a non-empty list of ints > 0, "
                             f"got {self.unet.block_out_channels!r}")
        for name in ("down_block_types", "up_block_types", "attention_head_dim"):
            if len(getattr(self.unet, name)) != n_blocks:
                raise ValueError(f"unet.{name} must have {n_blocks} entries (one per block)")
        if self.image_size % 2 ** (n_blocks - 1):
            raise ValueError(f"image_size must be divisible by 2**(len(block_out_channels)-1) = {2 ** (n_blocks - 1)}")
        if self.num_observed < 2:
            raise ValueError(f"num_observed must be >= 2 (the motion encoder reads frame differences), got {self.num_observed}")
        if not 1 <= self.train_future_k <= self.num_future:
            raise ValueError(f"train_future_k must be in [1, num_future={self.num_future}], got {self.train_future_k}")
        return self

    def unet_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of :class:`stdiff.models.unet.SpadeUNet`."""
        u = self.unet
        return dict(
            sample_size=self.image_size,
            in_channels=2 * self.channels,
            out_channels=self.channels,
            m_channels=self.motion_channels,
            layers_per_block=u.layers_per_block,
            block_out_channels=list(u.block_out_channels),
            down_block_types=list(u.down_block_types),
            up_block_types=list(u.up_block_types),
            attention_head_dim=list(u.attention_head_dim),
            norm_num_groups=u.norm_num_groups,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "STDiffConfig":
        """Build from :meth:`to_dict` output; unknown keys raise ValueError naming them."""
        data = copy.deepcopy(dict(data))
        sub = {"motion": MotionConfig, "sde": SDEConfig, "unet": UNetConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown STDiffConfig keys: {sorted(unknown)}")
        for key, klass in sub.items():
            if key in data and isinstance(data[key], dict):
                fields = {f.name for f in dataclasses.fields(klass)}
                bad = set(data[key]) - fields
                if bad:
                    raise ValueError(f"unknown {key} config keys: {sorted(bad)}")
                data[key] = klass(**data[key])
        return cls(**data).validate()


_UNET_64 = dict(
    block_out_channels=[128, 256, 256, 512, 512],
    down_block_types=["DownBlock2D"] + ["AttnDownBlock2D"] * 4,
    up_block_types=["AttnUpBlock2D"] * 4 + ["UpBlock2D"],
    attention_head_dim=[None, 128, 128, 128, 128],
)
_UNET_128 = dict(
    block_out_channels=[256, 256, 512, 768, 1024],
    down_block_types=["DownBlock2D"] * 3 + ["AttnDownBlock2D"] * 2,
    up_block_types=["AttnUpBlock2D"] * 2 + ["UpBlock2D"] * 3,
    attention_head_dim=[None, None, None, 192, 256],
)


def _official(image_size: int, channels: int, to: int, tp: int, unet: dict, ch: int, n_downs: int,
              k: int = 6) -> STDiffConfig:
    """An official training config; ``k`` = future frames drawn per training clip (``rand_Tp``)."""
    return STDiffConfig(
        image_size=image_size,
        channels=channels,
        motion=MotionConfig(model_channels=ch, n_downs=n_downs),
        unet=UNetConfig(**copy.deepcopy(unet)),
        num_observed=to,
        num_future=tp,
        train_future_k=k,
    )


PRESETS: dict[str, STDiffConfig] = {
    # official training configs of STDiffProject (stdiff/configs/*_train_config.yaml)
    "smmnist64": _official(64, 1, 5, 10, _UNET_64, 64, 2),
    "kth64": _official(64, 3, 10, 10, _UNET_64, 64, 2),
    "bair64": _official(64, 3, 2, 10, _UNET_64, 64, 2),
    "cityscapes128": _official(128, 3, 2, 10, _UNET_128, 32, 3),
    "kitti128": _official(128, 3, 4, 5, _UNET_128, 32, 3, k=2),
    # 1.3 M parameters, 32 px grey moving digits: the configuration that learns fast on a CPU (the shipped
    # demo model): a leaky motion encoder and the truncated-SNR loss weighting make the motion pathway learn;
    # gap-aware (SPADE on gap * motion, gap-0 training pairs) so that it predicts between frames
    "tiny": STDiffConfig(
        image_size=32,
        channels=1,
        motion=MotionConfig(model_channels=8, n_downs=2, activation="leaky_relu"),
        sde=SDEConfig(dt=0.25),
        unet=UNetConfig(
            block_out_channels=[16, 32, 64],
            down_block_types=["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
            attention_head_dim=[None, None, 32],
            layers_per_block=1,
            norm_num_groups=8,
        ),
        num_observed=4,
        num_future=3,
        train_future_k=2,
        loss_weighting="truncated_snr",
        gap_conditioning="scaled_motion",
        gap_zero_prob=0.2,
    ),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset(name: str, **overrides: Any) -> STDiffConfig:
    """A fresh copy of a named preset; top-level fields may be overridden (``channels=1``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {preset_names()}")
    cfg = copy.deepcopy(PRESETS[name])
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"unknown config field {key!r} for preset override")
        setattr(cfg, key, value)
    return cfg.validate()
