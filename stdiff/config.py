"""Model configurations and the named presets (official shapes for the 64 px and 128 px models)."""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .checks import integer

__all__ = ["MotionConfig", "SDEConfig", "UNetConfig", "STDiffConfig", "LIMITS", "PRESETS", "preset", "preset_names"]

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
#: what the diffusion generates: the frame itself (official) or its change from the conditioning frame
DIFFUSION_TARGETS = ("frame", "residual")


#: Bounds of every numeric config field (inclusive): far beyond any trained model, small enough that
#: building the model, its noise schedule and one prediction stays within a machine's means.
LIMITS: dict[str, tuple[float, float]] = {
    "image_size": (8, 1024),
    "motion.model_channels": (1, 4096),
    "motion.n_downs": (0, 6),
    "sde.n_layers": (1, 64),
    "sde.dt": (1e-3, 1.0),
    "unet.blocks": (1, 8),
    "unet.block_out_channels": (1, 4096),
    "unet.attention_head_dim": (1, 4096),
    "unet.layers_per_block": (1, 16),
    "unet.norm_num_groups": (1, 1024),
    "num_train_timesteps": (1, 10_000),
    "beta_start": (1e-8, 0.5),
    "beta_end": (1e-8, 0.999),
    "num_observed": (2, 1000),
    "num_future": (1, 10_000),
    "train_future_k": (1, 10_000),
    "loss_weight_cap": (1.0, 1e6),
    "gap_zero_prob": (0.0, 0.999),
    "cond_noise": (0.0, 1.0),
}
UNET_DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UNET_UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")


def _int(name: str, value: object, limit: str | None = None) -> None:
    """ValueError naming ``name`` unless ``value`` is an int (not a bool) within LIMITS[limit or name]."""
    low, high = LIMITS[limit or name]
    integer(name, value, int(low), int(high))


def _real(name: str, value: object) -> None:
    """ValueError naming ``name`` unless ``value`` is a finite real number within LIMITS[name]."""
    low, high = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


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
    #: "frame" (official): the diffusion generates the frame; "residual": it generates the change from
    #: the conditioning frame, (frame - cond) / 2, so a frame a small gap away stays close to its
    #: conditioning frame wherever the model sees no motion
    diffusion_target: str = "frame"
    #: training only: the conditioning frame of each target gets Gaussian noise of a std drawn uniformly
    #: in [0, cond_noise] (clamped to [-1, 1]; gap-0 targets stay clean), so that the model learns to
    #: clean up the small errors of the generated frames it is conditioned on at prediction
    cond_noise: float = 0.0

    @property
    def motion_channels(self) -> int:
        return self.motion.model_channels * 2**self.motion.n_downs

    @property
    def motion_size(self) -> int:
        return self.image_size // 2**self.motion.n_downs

    def validate(self) -> "STDiffConfig":
        """Raise ValueError naming the first bad field and its allowed range (:data:`LIMITS`); returns self.

        Types and bounds are checked before anything is built from them, so a hostile config (a
        float where an int belongs, ``num_train_timesteps: 1e9``, ``layers_per_block: 1e5``) is
        refused at once instead of allocating or looping.
        """
        for section in ("motion", "sde", "unet"):
            klass = {"motion": MotionConfig, "sde": SDEConfig, "unet": UNetConfig}[section]
            if not isinstance(getattr(self, section), klass):
                raise ValueError(f"{section} must be a mapping of {klass.__name__} fields, "
                                 f"got {getattr(self, section)!r}")
        m, s, u = self.motion, self.sde, self.unet
        _int("image_size", self.image_size)
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        _int("motion.model_channels", m.model_channels)
        _int("motion.n_downs", m.n_downs)
        _bool("motion.standard_gru", m.standard_gru)
        _choice("motion.activation", m.activation, MOTION_ACTIVATIONS)
        if self.image_size % 2**m.n_downs:
            raise ValueError(f"image_size must be divisible by 2**motion.n_downs = {2**m.n_downs}, got {self.image_size}")
        _int("sde.n_layers", s.n_layers)
        _choice("sde.method", s.method, SDE_METHODS)
        _real("sde.dt", s.dt)
        _choice("sde.grid", s.grid, SDE_GRIDS)
        self._validate_unet(u)
        _int("num_train_timesteps", self.num_train_timesteps)
        _real("beta_start", self.beta_start)
        _real("beta_end", self.beta_end)
        if not self.beta_start < self.beta_end:
            raise ValueError(f"beta_start must be < beta_end, got {self.beta_start!r} and {self.beta_end!r}")
        _int("num_observed", self.num_observed)
        _int("num_future", self.num_future)
        _int("train_future_k", self.train_future_k)
        if self.train_future_k > self.num_future:
            raise ValueError(f"train_future_k must be in [1, num_future={self.num_future}], got {self.train_future_k}")
        _choice("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        _real("loss_weight_cap", self.loss_weight_cap)
        _choice("gap_conditioning", self.gap_conditioning, GAP_CONDITIONINGS)
        _real("gap_zero_prob", self.gap_zero_prob)
        if self.gap_zero_prob and self.gap_conditioning == "none":
            raise ValueError("gap_zero_prob > 0 needs a gap-aware model (gap_conditioning != 'none')")
        _choice("diffusion_target", self.diffusion_target, DIFFUSION_TARGETS)
        _real("cond_noise", self.cond_noise)
        return self

    def _validate_unet(self, u: UNetConfig) -> None:
        for name in ("block_out_channels", "down_block_types", "up_block_types", "attention_head_dim"):
            if not isinstance(getattr(u, name), (list, tuple)):
                raise ValueError(f"unet.{name} must be a list (one entry per block), got {getattr(u, name)!r}")
        n_blocks = len(u.block_out_channels)
        low, high = LIMITS["unet.blocks"]
        if not low <= n_blocks <= high:
            raise ValueError(f"unet.block_out_channels must have {low} to {high} entries, got {n_blocks}")
        for name in ("down_block_types", "up_block_types", "attention_head_dim"):
            if len(getattr(u, name)) != n_blocks:
                raise ValueError(f"unet.{name} must have {n_blocks} entries (one per block)")
        _int("unet.layers_per_block", u.layers_per_block)
        _int("unet.norm_num_groups", u.norm_num_groups)
        for k, (ch, down, up, head) in enumerate(zip(u.block_out_channels, u.down_block_types, u.up_block_types,
                                                     u.attention_head_dim)):
            _int(f"unet.block_out_channels[{k}]", ch, "unet.block_out_channels")
            if ch % u.norm_num_groups:
                raise ValueError(f"unet.block_out_channels[{k}] = {ch} must be divisible by unet.norm_num_groups = "
                                 f"{u.norm_num_groups}")
            _choice(f"unet.down_block_types[{k}]", down, UNET_DOWN_BLOCKS)
            _choice(f"unet.up_block_types[{k}]", up, UNET_UP_BLOCKS)
            if head is not None:
                _int(f"unet.attention_head_dim[{k}]", head, "unet.attention_head_dim")
        if self.image_size % 2 ** (n_blocks - 1):
            raise ValueError(f"image_size must be divisible by 2**(len(block_out_channels)-1) = {2 ** (n_blocks - 1)}")

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
        if not isinstance(data, dict):
            raise ValueError(f"the model config must be a mapping of STDiffConfig fields, got {data!r}")
        data = copy.deepcopy(dict(data))
        sub = {"motion": MotionConfig, "sde": SDEConfig, "unet": UNetConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown STDiffConfig keys: {sorted(unknown)}")
        for key, klass in sub.items():
            if key in data and not isinstance(data[key], dict):
                raise ValueError(f"{key} must be a mapping of {klass.__name__} fields, got {data[key]!r}")
            if key in data:
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
    # gap-aware (SPADE on gap * motion, gap-0 training pairs) so that it predicts between frames; the
    # diffusion generates the change from the conditioning frame, trained against noised conditioning frames
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
        diffusion_target="residual",
        cond_noise=0.3,
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
