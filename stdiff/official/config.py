"""Official STDiff configs -> :class:`stdiff.config.STDiffConfig`.

An official model folder (``stdiff/`` of an exported pipeline, or ``unet/``/``unet_ema/`` of a
training checkpoint) holds a ``config.json`` written by diffusers' ``ConfigMixin`` for
``STDiffDiffusers(unet_cfg, tde_cfg)``: ``unet_cfg`` are the ``UNet2DMotionCond`` arguments and
``tde_cfg`` the ``STDiff.DiffNet`` section of the training YAML (MotionEncoder, DiffUnet, Int).
The pipeline's ``scheduler/scheduler_config.json`` gives the noise schedule. Settings that this
package does not implement raise ValueError naming the key, never a silent approximation.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..checks import integer
from ..config import MotionConfig, SDEConfig, STDiffConfig, UNetConfig

__all__ = ["CLIP_FIELDS", "config_from_official", "architecture_differences"]

#: STDiffConfig fields that describe clip lengths, not the network (absent from official model configs).
CLIP_FIELDS = ("num_observed", "num_future", "train_future_k")

# UNet2DMotionCond's constructor defaults (the fork's unet_2d_motion_cond.py).
_UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "m_channels": 0, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32,
    "norm_eps": 1e-5, "resnet_time_scale_shift": "default", "add_attention": True,
    "class_embed_type": None, "num_class_embeds": None,
}
# Arguments whose value is fixed in stdiff's SpadeUNet.
_UNET_FIXED = ("center_input_sample", "time_embedding_type", "freq_shift", "flip_sin_to_cos",
               "mid_block_scale_factor", "downsample_padding", "act_fn", "norm_eps",
               "resnet_time_scale_shift", "add_attention", "class_embed_type", "num_class_embeds")
_DOWN_TYPES = ("DownBlock2D", "AttnDownBlock2D")
_UP_TYPES = ("UpBlock2D", "AttnUpBlock2D")
# (sde_type, torchsde method) -> our SDE method
_SDE_METHODS = {("stratonovich", "euler_heun"): "euler_heun", ("ito", "euler"): "euler"}
# DDPMScheduler arguments that stdiff's samplers fix (name -> supported value).
_SCHEDULER_FIXED = {"beta_schedule": "linear", "trained_betas": None, "prediction_type": "epsilon",
                    "variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0,
                    "thresholding": False}


def _section(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"official config: {where}{key} must be a mapping, got {type(value).__name__}")
    return value


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"official config: unsupported {key}={value!r} (stdiff supports {expected})")


def _int(data: Mapping[str, Any], key: str, where: str) -> int:
    return integer(f"official config: {where}{key}", data.get(key), 1)


def _unet(unet_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], UNetConfig]:
    unknown = sorted(set(unet_cfg) - set(_UNET_DEFAULTS))
    if unknown:
        raise ValueError(f"official config: unknown unet_cfg keys {unknown} (not arguments of UNet2DMotionCond)")
    cfg = {**_UNET_DEFAULTS, **unet_cfg}
    for key in _UNET_FIXED:
        _require(cfg[key] == _UNET_DEFAULTS[key], f"unet_cfg.{key}", cfg[key], repr(_UNET_DEFAULTS[key]))
    size = cfg["sample_size"]
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    _require(isinstance(size, int) and not isinstance(size, bool) and size > 0, "unet_cfg.sample_size", size,
             "a positive int (square frames)")
    cfg["sample_size"] = size
    n = len(cfg["block_out_channels"])
    down = [t[7:] if t.startswith("UNetRes") else t for t in cfg["down_block_types"]]
    up = [t[7:] if t.startswith("UNetRes") else t for t in cfg["up_block_types"]]
    for key, types, allowed in (("down_block_types", down, _DOWN_TYPES), ("up_block_types", up, _UP_TYPES)):
        _require(len(types) == n and all(t in allowed for t in types), f"unet_cfg.{key}", types,
                 f"{n} entries from {allowed}")
    heads = cfg["attention_head_dim"]
    heads = [heads] * n if heads is None or isinstance(heads, int) else list(heads)
    _require(len(heads) == n, "unet_cfg.attention_head_dim", cfg["attention_head_dim"], f"an int or {n} entries")
    return cfg, UNetConfig(
        block_out_channels=[int(c) for c in cfg["block_out_channels"]],
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=heads,
        layers_per_block=_int(cfg, "layers_per_block", "unet_cfg."),
        norm_num_groups=_int(cfg, "norm_num_groups", "unet_cfg."),
    )


def _sde(int_cfg: Mapping[str, Any], n_layers: int) -> SDEConfig:
    if int_cfg.get("sde", False):
        options = _section(int_cfg, "sde_options", "tde_cfg.Int.")
        noise = options.get("noise_type")
        _require(noise == "diagonal", "tde_cfg.Int.sde_options.noise_type", noise, "'diagonal'")
        _require(not options.get("adaptive", False), "tde_cfg.Int.sde_options.adaptive", options.get("adaptive"),
                 "False (fixed steps)")
        pair = (str(options.get("sde_type", "")).lower(), int_cfg.get("method"))
        _require(pair in _SDE_METHODS, "(sde_type, method)", pair, f"one of {sorted(_SDE_METHODS)}")
        method, dt = _SDE_METHODS[pair], options.get("dt")
    else:  # an ODE model: torchdiffeq odeint with a fixed step
        method_name = int_cfg.get("method")
        _require(method_name == "euler", "tde_cfg.Int.method (sde=False)", method_name, "'euler'")
        method, dt = "ode", _section(int_cfg, "ode_options", "tde_cfg.Int.").get("step_size")
    _require(isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0, "time step (dt/step_size)", dt,
             "a positive number")
    return SDEConfig(n_layers=n_layers, method=method, dt=float(dt))


def _schedule(scheduler_config: Mapping[str, Any] | None) -> dict[str, Any]:
    if scheduler_config is None:
        return {}
    for key, supported in _SCHEDULER_FIXED.items():
        if key in scheduler_config:
            _require(scheduler_config[key] == supported, f"scheduler.{key}", scheduler_config[key], repr(supported))
    out: dict[str, Any] = {}
    if "num_train_timesteps" in scheduler_config:
        out["num_train_timesteps"] = _int(scheduler_config, "num_train_timesteps", "scheduler.")
    for key in ("beta_start", "beta_end"):
        if key in scheduler_config:
            out[key] = float(scheduler_config[key])
    return out


def config_from_official(model_config: Mapping[str, Any],
                         scheduler_config: Mapping[str, Any] | None = None) -> STDiffConfig:
    """Build the STDiffConfig of an official model.

    model_config: the parsed ``config.json`` of ``STDiffDiffusers`` (keys ``unet_cfg``, ``tde_cfg``;
    diffusers' ``_class_name`` etc. and EMA bookkeeping keys are ignored). scheduler_config: the
    parsed ``scheduler_config.json`` or None (then DDPM's 1000 linear steps 1e-4..0.02).
    Clip lengths (num_observed, num_future, train_future_k) are not stored in official model
    configs: they keep STDiffConfig's defaults (override them with ``dataclasses.replace``).
    """
    if not isinstance(model_config, Mapping):
        raise TypeError(f"model_config must be a mapping (parsed config.json), got {type(model_config).__name__}")
    name = model_config.get("_class_name", "STDiffDiffusers")
    _require(name == "STDiffDiffusers", "_class_name", name, "'STDiffDiffusers'")
    unet_cfg, unet = _unet(_section(model_config, "unet_cfg", ""))
    tde = _section(model_config, "tde_cfg", "")
    _require(tde.get("autoregressive") is True, "tde_cfg.autoregressive", tde.get("autoregressive"),
             "True (the UNet conditioned on the previous frame)")
    _require(not tde.get("super_res_training", False), "tde_cfg.super_res_training", tde.get("super_res_training"),
             "False")
    enc = _section(tde, "MotionEncoder", "tde_cfg.")
    _require(enc.get("learn_diff_image", False) is True, "tde_cfg.MotionEncoder.learn_diff_image",
             enc.get("learn_diff_image"), "True (encoding frame differences)")
    channels = _int(unet_cfg, "out_channels", "unet_cfg.")
    _require(unet_cfg["in_channels"] == 2 * channels, "unet_cfg.in_channels", unet_cfg["in_channels"],
             f"2 * out_channels = {2 * channels} (noisy frame + previous frame)")
    _require(enc.get("in_channels") == channels, "tde_cfg.MotionEncoder.in_channels", enc.get("in_channels"),
             f"unet_cfg.out_channels = {channels}")
    _require(enc.get("image_size") == unet_cfg["sample_size"], "tde_cfg.MotionEncoder.image_size",
             enc.get("image_size"), f"unet_cfg.sample_size = {unet_cfg['sample_size']}")
    motion = MotionConfig(model_channels=_int(enc, "model_channels", "tde_cfg.MotionEncoder."),
                          n_downs=_int(enc, "n_downs", "tde_cfg.MotionEncoder."))
    motion_channels = motion.model_channels * 2**motion.n_downs
    _require(unet_cfg["m_channels"] == motion_channels, "unet_cfg.m_channels", unet_cfg["m_channels"],
             f"the motion encoder's output channels {motion_channels}")
    diff = _section(tde, "DiffUnet", "tde_cfg.")
    _require(diff.get("nonlinear") == "tanh", "tde_cfg.DiffUnet.nonlinear", diff.get("nonlinear"), "'tanh'")
    for key, expected in (("in_channels", motion_channels), ("hidden_channels", motion_channels),
                          ("image_size", unet_cfg["sample_size"] // 2**motion.n_downs)):
        if key in diff:  # filled in by the official DiffModel at construction
            _require(diff[key] == expected, f"tde_cfg.DiffUnet.{key}", diff[key], str(expected))
    sde = _sde(_section(tde, "Int", "tde_cfg."), _int(diff, "n_layers", "tde_cfg.DiffUnet."))
    return STDiffConfig(image_size=unet_cfg["sample_size"], channels=channels, motion=motion, sde=sde, unet=unet,
                        **_schedule(scheduler_config)).validate()


def architecture_differences(a: STDiffConfig, b: STDiffConfig) -> list[str]:
    """Fields (dotted names) where two configs describe different models; clip lengths are ignored."""
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    out: list[str] = []
    for key in da:
        if key in CLIP_FIELDS:
            continue
        if isinstance(da[key], dict):
            out += [f"{key}.{k}" for k in da[key] if da[key][k] != db[key][k]]
        elif da[key] != db[key]:
            out.append(key)
    return out
