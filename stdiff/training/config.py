"""Training configuration: a dataclass, YAML files and ``key=value`` overrides.

Precedence (later wins): dataclass defaults < YAML file (``--config``) < explicit CLI flags <
``--set key=value``. Nested model fields are reached with dots:
``--set model.unet.norm_num_groups=4`` (the ``model`` mapping overrides the preset's
:class:`~stdiff.config.STDiffConfig` fields). Values are parsed as YAML (``3``, ``1e-4``,
``true``, ``[32, 64]``; a number written like ``1e-4``, which YAML 1.1 reads as a string, is
taken as a number).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..checks import integer
from ..config import STDiffConfig, preset, preset_names

__all__ = ["TrainConfig", "load_yaml", "apply_overrides", "parse_override"]


@dataclass
class TrainConfig:
    """Everything ``stdiff train`` needs. Steps count optimizer updates (after accumulation).

    Batches are per process: the global batch is ``batch_size * grad_accum * world_size``.
    """

    # model
    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's fields
    # data (see stdiff.data.build_dataset)
    data: str = "synthetic"
    data_root: str | None = None
    num_videos: int | None = None
    frame_step: int = 1
    #: synthetic data only: largest velocity component in px/frame (default image_size / 16)
    data_speed: int | None = None
    workers: int = 2
    # optimisation
    steps: int = 2000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-6
    adam_eps: float = 1e-8
    warmup_steps: int | None = None  # None: 5% of steps, at most 500; must be < steps
    lr_schedule: str = "cosine"  # or "cosine_with_restarts" (official), see stdiff.training.schedule
    lr_cycles: int = 2  # half cosines of cosine_with_restarts (the official num_cycles)
    grad_clip: float = 1.0
    #: bfloat16 autocast: true, false, or "auto" (only where the device computes bfloat16 natively, see stdiff.dtypes)
    bf16: bool | str = False
    #: weights and activations in channels_last (NHWC): oneDNN's faster convolution layout on CPUs
    channels_last: bool = False
    #: torch.compile the loss (forward and backward) of each step; the first steps pay the compile
    #: (about 1-3 minutes on a 2-core CPU, seconds from Inductor's disk cache): for long runs
    compile: bool = False
    # EMA (diffusers-style warm-up: decay = 1 - (1 + step / inv_gamma) ** -power, capped)
    ema_max_decay: float = 0.9999
    ema_power: float = 0.75
    ema_inv_gamma: float = 1.0
    # run
    out: str = "runs/stdiff"
    #: an exported model folder whose weights start the training (same architecture; fine-tuning)
    init_from: str | None = None
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    save_every: int = 500
    keep_last: int = 3
    export_every: int = 500
    log_every: int = 10
    preview_every: int = 500
    preview_clips: int = 4
    preview_sampler: str = "ddim"
    preview_steps: int = 25

    # ---- derived ------------------------------------------------------------------------------
    def model_config(self) -> STDiffConfig:
        """The preset with ``model`` overrides applied (validated)."""
        base = preset(self.preset).to_dict()
        return STDiffConfig.from_dict(_deep_merge(base, self.model, "model"))

    def warmup(self) -> int:
        """Warm-up steps actually used."""
        return min(500, self.steps // 20) if self.warmup_steps is None else self.warmup_steps

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    # ---- checks -------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field; returns self."""
        if self.preset not in preset_names():
            raise ValueError(f"preset must be one of {preset_names()}, got {self.preset!r}")
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be a mapping of STDiffConfig overrides, got {type(self.model).__name__}")
        positive = ("steps", "batch_size", "grad_accum", "frame_step", "log_every", "keep_last", "preview_clips",
                    "preview_steps")
        for name in positive:
            integer(name, getattr(self, name), 1)
        for name in ("workers", "save_every", "export_every", "preview_every", "seed"):
            integer(name, getattr(self, name), 0)
        if self.num_videos is not None:
            integer("num_videos", self.num_videos, 1)
        if self.data_speed is not None:
            integer("data_speed", self.data_speed, 1)
            if self.data != "synthetic":
                raise ValueError(f"data_speed applies to the synthetic data only, got data={self.data!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from must be an exported model folder or null, got {self.init_from!r}")
        if self.warmup_steps is not None:
            integer("warmup_steps", self.warmup_steps, 0)
            if self.warmup_steps >= self.steps:
                raise ValueError(f"warmup_steps must be < steps ({self.steps}), got {self.warmup_steps}: the "
                                 "learning rate would never leave its warm-up")
        from .schedule import LR_SCHEDULES

        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        integer("lr_cycles", self.lr_cycles, 1)
        for name in ("lr", "adam_eps", "grad_clip", "ema_inv_gamma", "ema_power"):
            if not _is_number(getattr(self, name)) or not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not _is_number(self.ema_max_decay) or not 0.0 <= self.ema_max_decay < 1.0:
            raise ValueError(f"ema_max_decay must be a number in [0, 1), got {self.ema_max_decay!r}")
        for name in ("resume", "channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.bf16, bool) and self.bf16 != "auto":
            raise ValueError(f"bf16 must be true or false, got {self.bf16!r} (or 'auto': bfloat16 autocast where "
                             "the device computes bfloat16 natively)")
        if self.data_root is not None and not isinstance(self.data_root, str):
            raise ValueError(f"data_root must be a folder path or null, got {self.data_root!r}")
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        for name in ("data", "out", "device", "preview_sampler"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        from ..sampling import SAMPLERS

        if self.preview_sampler not in SAMPLERS:
            raise ValueError(f"preview_sampler must be one of {sorted(SAMPLERS)}, got {self.preview_sampler!r}")
        self.model_config()
        return self

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"a training config must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}; known: {sorted(_field_names())}")
        return cls(**copy.deepcopy(data)).validate()


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _is_number(value: object) -> bool:
    """A finite int or float (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _deep_merge(base: dict[str, Any], update: dict[str, Any], where: str) -> dict[str, Any]:
    """``base`` updated recursively with ``update``; keys absent from ``base`` raise ValueError."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in out:
            raise ValueError(f"unknown key {where}.{key}; known: {sorted(out)}")
        if isinstance(out[key], dict) and not isinstance(value, dict):
            raise ValueError(f"{where}.{key} must be a mapping of its fields ({', '.join(sorted(out[key]))}), "
                             f"got {value!r}")
        if isinstance(out[key], dict):
            out[key] = _deep_merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of TrainConfig fields; FileNotFoundError/ValueError with the reason."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"--config {str(p)!r} is not a file, expected a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"--config {str(p)!r} is not a text file (expected YAML): {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r} must hold a mapping of training options, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.unet.norm_num_groups=4"`` -> (["model", "unet", "norm_num_groups"], 4)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"--set {text!r}: value is not valid YAML: {exc}") from exc
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c.isdigit() for c in value) else value  # "1e-4": YAML 1.1 says str
    return [part.strip() for part in key.split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings to a TrainConfig mapping (nested keys only under ``model``)."""
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        if path[0] not in _field_names():
            raise ValueError(f"--set {text!r}: unknown training config key {path[0]!r}; known: {sorted(_field_names())}")
        if len(path) > 1 and path[0] != "model":
            raise ValueError(f"--set {text!r}: only 'model' has nested keys")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {text!r}: {part!r} is not a mapping")
        node[path[-1]] = value
    return out
