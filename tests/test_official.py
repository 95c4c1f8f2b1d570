"""Official STDiff checkpoints: key mapping, config conversion, loading, conversion command, numerical parity.

The parity tests compare our reference path with functions written here from reading the official
code (XiYe20/STDiffProject ``stdiff/models/diff_unet.py`` and the diffusers fork XiYe20/CustomDiffusers:
``unet_2d_motion_cond.py``, ``unet_2d_blocks.py``, ``resnet.py``, ``attention.py``, ``embeddings.py``,
``scheduling_ddpm.py``, ``scheduling_ddim.py``). They read random weights by their OFFICIAL names,
so a wrong key mapping fails them too. Tolerance: 1e-5 relative to the largest reference value.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchsde
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import Tensor

import stdiff.models.stdiff as stdiff_module
from stdiff import ops
from stdiff.checkpoint import load_pretrained, save_pretrained
from stdiff.commands import convert_official
from stdiff.config import MotionConfig, SDEConfig, STDiffConfig, UNetConfig, preset
from stdiff.models import STDiff
from stdiff.models.sde import torchsde_grid
from stdiff.official import (
    architecture_differences,
    config_from_official,
    is_official_checkpoint,
    load_official,
    official_to_ours,
    ours_to_official,
    state_official_to_ours,
    state_ours_to_official,
)
from stdiff.official.keys import PREFIXES
from stdiff.sampling import NoiseSchedule, make_sampler

REFERENCE = Path(__file__).resolve().parent / "data"  # copies of shared/reference/official_keys_*.txt
LISTINGS = {"kth64": "official_keys_kth64.txt", "cityscapes128": "official_keys_cityscapes128.txt"}

# ---------------------------------------------------------------------------------------------
# A small model, described twice: as our config and as the official config.json would hold it.
# ---------------------------------------------------------------------------------------------
SMALL = STDiffConfig(
    image_size=16,
    channels=3,
    motion=MotionConfig(model_channels=8, n_downs=2),
    sde=SDEConfig(n_layers=2, method="euler_heun", dt=0.1),
    unet=UNetConfig(block_out_channels=[32, 64], down_block_types=["DownBlock2D", "AttnDownBlock2D"],
                    up_block_types=["AttnUpBlock2D", "UpBlock2D"], attention_head_dim=[None, 32],
                    layers_per_block=1, norm_num_groups=8),
    num_observed=3, num_future=2, train_future_k=2,
)
OFFICIAL_SMALL = {
    "_class_name": "STDiffDiffusers",
    "_diffusers_version": "0.15.0.dev0",
    "unet_cfg": {"sample_size": 16, "in_channels": 6, "out_channels": 3, "m_channels": 32, "layers_per_block": 1,
                 "block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                 "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": [None, 32],
                 "norm_num_groups": 8},
    "tde_cfg": {"autoregressive": True, "super_res_training": False,
                "MotionEncoder": {"learn_diff_image": True, "image_size": 16, "in_channels": 3, "model_channels": 8,
                                  "n_downs": 2},
                "DiffUnet": {"n_layers": 2, "nonlinear": "tanh"},
                "Int": {"sde": True, "method": "euler_heun",
                        "sde_options": {"noise_type": "diagonal", "sde_type": "stratonovich", "dt": 0.1,
                                        "rtol": 1e-3, "atol": 1e-3, "adaptive": False},
                        "ode_options": {"step_size": 0.1, "norm": None}}},
}
SCHEDULER = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.15.0.dev0", "num_train_timesteps": 1000,
             "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": None,
             "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon"}


def assert_rel(ours: Tensor, ref: Tensor, tol: float = 1e-5) -> None:
    """max |ours - ref| <= tol * max |ref| (float32 parity)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    err = (ours.double() - ref.double()).abs().max().item()
    scale = ref.double().abs().max().item()
    assert err <= tol * scale, f"max abs error {err:.3e} > {tol:g} * max |ref| {scale:.3e}"


def official_state(config: STDiffConfig, seed: int = 0) -> dict[str, Tensor]:
    """Random weights in the official key layout (non-zero everywhere, unit-scale activations)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {ours_to_official(k): v.shape for k, v in STDiff(config).state_dict().items()}
    state = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        if len(shape) > 1:
            state[name] = noise / math.sqrt(math.prod(shape[1:]))
        elif name.endswith(".weight"):  # GroupNorm affine scale
            state[name] = 1 + 0.1 * noise
        else:
            state[name] = 0.1 * noise
    return state


def write_pipeline(root: Path, state: dict[str, Tensor], model_config: dict | None = OFFICIAL_SMALL,
                   weights: str = "diffusion_pytorch_model.bin") -> Path:
    """An exported official pipeline folder, as STDiffPipeline.save_pretrained lays it out."""
    (root / "stdiff").mkdir(parents=True)
    (root / "scheduler").mkdir()
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "STDiffPipeline", "stdiff": ["models", "STDiffDiffusers"],
         "scheduler": ["diffusers", "DDPMScheduler"]}))
    if model_config is not None:
        (root / "stdiff" / "config.json").write_text(json.dumps(model_config))
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    if weights.endswith(".safetensors"):
        save_file(state, str(root / "stdiff" / weights))
    else:
        torch.save(state, root / "stdiff" / weights)
    return root


@pytest.fixture
def meta_models(monkeypatch):
    """Build full-size models on the meta device (the float64 noise schedule stays on the CPU)."""
    def cpu_schedule(*args, **kwargs):
        with torch.device("cpu"):
            return NoiseSchedule(*args, **kwargs)

    monkeypatch.setattr(stdiff_module, "NoiseSchedule", cpu_schedule)

    def build(config: STDiffConfig) -> STDiff:
        with torch.device("meta"):
            return stdiff_module.STDiff(config)

    return build


def read_listing(name: str) -> tuple[dict, dict[str, tuple[int, ...]]]:
    header: dict = {}
    keys: dict[str, tuple[int, ...]] = {}
    for line in (REFERENCE / LISTINGS[name]).read_text().splitlines():
        if line.startswith("# unet_config: "):
            header["unet_cfg"] = json.loads(line[len("# unet_config: "):])
        elif line.startswith("# DiffNet: "):
            header["tde_cfg"] = json.loads(line[len("# DiffNet: "):])
        elif m := re.match(r"# (params\.\w+|num_state_dict_keys) = (\d+)$", line):
            header[m.group(1)] = int(m.group(2))
        elif line and not line.startswith("#"):
            key, shape = line.split("\t")
            keys[key] = tuple(json.loads(shape))
    return header, keys


# ---------------------------------------------------------------------------------------------
# Key listings of the official 64 px and 128 px models
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_every_listed_key_maps_to_a_parameter_of_the_same_shape(name, meta_models):
    header, listed = read_listing(name)
    model = meta_models(preset(name))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(listed) == header["num_state_dict_keys"] == len(ours)
    for key, shape in listed.items():
        mapped = official_to_ours(key)
        assert ours.get(mapped) == shape, f"{key} -> {mapped}: ours {ours.get(mapped)}, official {shape}"
        assert ours_to_official(mapped) == key
    assert {ours_to_official(k) for k in ours} == set(listed)


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_parameter_counts_match_the_listing(name, meta_models):
    header, _ = read_listing(name)
    model = meta_models(preset(name))

    def count(*prefixes: str, containing: str = "") -> int:
        return sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefixes) and containing in k)

    assert count("") == header["params.total"]
    assert count("motion_encoder.") == header["params.motion_encoder"]
    assert count("conv_gru.") == header["params.conv_gru_cell"]
    assert count("sde.drift.") == header["params.sde_drift_f"]
    assert count("sde.diffusion.") == header["params.sde_diffusion_g"]
    assert count("motion_encoder.", "conv_gru.", "sde.") == header["params.tde_model_total"]
    assert count("unet.") == header["params.diffusion_unet_total"]
    assert count("unet.", containing=".motion_cond_layer.") == header["params.diffusion_unet_spade_motion_cond_layers"]


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_listing_config_converts_to_the_preset(name):
    header, _ = read_listing(name)
    config = config_from_official({"_class_name": "STDiffDiffusers", "unet_cfg": header["unet_cfg"],
                                   "tde_cfg": header["tde_cfg"]}, SCHEDULER)
    assert architecture_differences(config, preset(name)) == []


# ---------------------------------------------------------------------------------------------
# Key mapping
# ---------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(pair=st.sampled_from(PREFIXES), rest=st.from_regex(r"[a-z_]{1,8}(\.[0-9a-z_]{1,8}){0,4}", fullmatch=True))
def test_key_mapping_round_trips(pair, rest):
    official, ours = pair
    assert official_to_ours(official + rest) == ours + rest
    assert ours_to_official(ours + rest) == official + rest


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="tde_model.unknown.weight"):
        official_to_ours("tde_model.unknown.weight")
    with pytest.raises(ValueError, match="schedule.betas"):
        ours_to_official("schedule.betas")
    converted, unmapped = state_official_to_ours({"diffusion_unet.conv_in.bias": torch.zeros(1),
                                                  "optimizer.step": torch.zeros(1)})
    assert list(converted) == ["unet.conv_in.bias"] and unmapped == ["optimizer.step"]


def test_state_dict_round_trip_official_ours_official():
    official = official_state(SMALL, seed=1)
    ours, unmapped = state_official_to_ours(official)
    assert unmapped == []
    model = STDiff(SMALL)
    model.load_state_dict(ours, strict=True)
    back, unmapped = state_ours_to_official(model.state_dict())
    assert unmapped == [] and list(back) == list(official)
    assert all(torch.equal(back[k], official[k]) for k in official)


# ---------------------------------------------------------------------------------------------
# Config conversion
# ---------------------------------------------------------------------------------------------
def test_small_official_config_converts():
    config = config_from_official(OFFICIAL_SMALL, SCHEDULER)
    assert architecture_differences(config, SMALL) == []


def test_official_ode_model_and_ito_euler():
    ode = copy.deepcopy(OFFICIAL_SMALL)
    ode["tde_cfg"]["Int"].update(sde=False, method="euler", ode_options={"step_size": 0.05, "norm": None})
    config = config_from_official(ode)
    assert (config.sde.method, config.sde.dt) == ("ode", 0.05)
    ito = copy.deepcopy(OFFICIAL_SMALL)
    ito["tde_cfg"]["Int"]["method"] = "euler"
    ito["tde_cfg"]["Int"]["sde_options"]["sde_type"] = "ito"
    assert config_from_official(ito).sde.method == "euler"


def _modified(path: str, value):
    cfg = copy.deepcopy(OFFICIAL_SMALL)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


@pytest.mark.parametrize("path, value, message", [
    ("tde_cfg.super_res_training", True, "super_res_training"),
    ("tde_cfg.autoregressive", False, "autoregressive"),
    ("tde_cfg.MotionEncoder.learn_diff_image", False, "learn_diff_image"),
    ("tde_cfg.Int.method", "milstein", "sde_type, method"),
    ("tde_cfg.Int.sde_options.adaptive", True, "adaptive"),
    ("tde_cfg.Int.sde_options.noise_type", "general", "noise_type"),
    ("tde_cfg.DiffUnet.nonlinear", "relu", "nonlinear"),
    ("unet_cfg.m_channels", 64, "m_channels"),
    ("unet_cfg.in_channels", 3, "in_channels"),
    ("unet_cfg.time_embedding_type", "fourier", "time_embedding_type"),
    ("unet_cfg.norm_eps", 1e-6, "norm_eps"),
    ("unet_cfg.down_block_types", ["DownBlock2D", "CrossAttnDownBlock2D"], "down_block_types"),
    ("unet_cfg.resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift"),
    ("unet_cfg.cross_attention_dim", 8, "cross_attention_dim"),
    ("_class_name", "UNet2DModel", "_class_name"),
])
def test_unsupported_official_settings_are_named(path, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        config_from_official(_modified(path, value), SCHEDULER)


@pytest.mark.parametrize("key, value", [("prediction_type", "v_prediction"), ("beta_schedule", "scaled_linear"),
                                        ("clip_sample", False), ("variance_type", "fixed_large")])
def test_unsupported_scheduler_settings_are_named(key, value):
    with pytest.raises(ValueError, match=f"scheduler.{key}"):
        config_from_official(OFFICIAL_SMALL, {**SCHEDULER, key: value})


def test_scheduler_config_sets_the_noise_schedule():
    config = config_from_official(OFFICIAL_SMALL, {**SCHEDULER, "num_train_timesteps": 500, "beta_end": 0.03})
    assert (config.num_train_timesteps, config.beta_start, config.beta_end) == (500, 1e-4, 0.03)


# ---------------------------------------------------------------------------------------------
# Loading: layouts, round trip, pickles, key reports
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["pipeline", "stdiff_folder", "raw_bin", "raw_safetensors", "unet_ema"])
def test_load_official_layouts_round_trip(tmp_path, layout):
    official = official_state(SMALL, seed=2)
    weights = "diffusion_pytorch_model.safetensors" if layout == "raw_safetensors" else "diffusion_pytorch_model.bin"
    root = write_pipeline(tmp_path / "pipe", official, weights=weights)
    if layout == "unet_ema":  # an accelerate training checkpoint: checkpoint-N/unet_ema/
        ema = tmp_path / "checkpoint-1000" / "unet_ema"
        ema.mkdir(parents=True)
        (ema / "config.json").write_text(json.dumps({**OFFICIAL_SMALL, "decay": 0.9999, "optimization_step": 10}))
        torch.save(official, ema / weights)
    source = {"pipeline": root, "stdiff_folder": root / "stdiff", "raw_bin": root / "stdiff" / weights,
              "raw_safetensors": root / "stdiff" / weights, "unet_ema": tmp_path / "checkpoint-1000"}[layout]
    assert is_official_checkpoint(source)
    model = load_official(source)
    assert architecture_differences(model.config, SMALL) == []
    back, unmapped = state_ours_to_official(model.state_dict())
    assert unmapped == [] and set(back) == set(official)
    assert all(torch.equal(back[k], official[k]) for k in official)


def test_is_official_checkpoint_rejects_other_things(tmp_path):
    model = STDiff(SMALL)
    save_pretrained(model, tmp_path / "ours")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "ours.safetensors"))
    (tmp_path / "empty").mkdir()
    for path in ("ours", "ours.safetensors", "empty", "missing", "ours/config.json"):
        assert not is_official_checkpoint(tmp_path / path), path


def test_raw_state_dict_needs_a_config(tmp_path):
    torch.save(official_state(SMALL), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="no official config.json"):
        load_official(tmp_path / "weights.pt")
    model = load_official(tmp_path / "weights.pt", config=SMALL)
    assert model.config.num_observed == SMALL.num_observed


def test_config_given_with_a_config_json_must_match_and_sets_clip_lengths(tmp_path):
    root = write_pipeline(tmp_path / "pipe", official_state(SMALL))
    clip = STDiffConfig(**{**SMALL.__dict__, "num_observed": 4, "num_future": 6, "train_future_k": 3})
    model = load_official(root, config=clip)
    assert (model.config.num_observed, model.config.num_future, model.config.train_future_k) == (4, 6, 3)
    other = copy.deepcopy(SMALL)
    other.unet.norm_num_groups = 16
    with pytest.raises(ValueError, match=r"unet\.norm_num_groups"):
        load_official(root, config=other)


class _PickledMapping(dict):
    """A state dict whose class is not on torch's weights-only allow-list."""


def test_pickle_needs_trust(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(_PickledMapping(official_state(SMALL)), path)
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_official(path, config=SMALL)
    model = load_official(path, trust_pickle=True, config=SMALL)
    assert isinstance(model, STDiff)


def test_missing_unexpected_and_mismatched_keys_are_named(tmp_path):
    state = official_state(SMALL)
    del state["diffusion_unet.conv_in.bias"]
    del state["tde_model.conv_gru_cell.GateConv.weight"]
    state["tde_model.extra.weight"] = torch.zeros(3)
    state["ema.shadow"] = torch.zeros(3)
    state["diffusion_unet.conv_out.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "w.bin")
    with pytest.raises(ValueError) as info:
        load_official(tmp_path / "w.bin", config=SMALL)
    message = str(info.value)
    for name in ("diffusion_unet.conv_in.bias", "tde_model.conv_gru_cell.GateConv.weight", "tde_model.extra.weight",
                 "ema.shadow", "diffusion_unet.conv_out.bias (5,) (model expects (3,))"):
        assert name in message
    assert "missing keys (2)" in message and "unexpected keys (2)" in message


def test_official_ode_checkpoint_has_no_diffusion_net(tmp_path):
    ode = copy.deepcopy(OFFICIAL_SMALL)
    ode["tde_cfg"]["Int"].update(sde=False, method="euler")
    state = {k: v for k, v in official_state(SMALL).items() if ".diff_unet_g." not in k}
    model = load_official(write_pipeline(tmp_path / "pipe", state, model_config=ode))
    assert model.config.sde.method == "ode"
    assert all(torch.count_nonzero(p) == 0 for p in model.sde.diffusion.parameters())


# ---------------------------------------------------------------------------------------------
# The conversion command
# ---------------------------------------------------------------------------------------------
def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    convert_official.build(parser)
    return convert_official.run(parser.parse_args(argv))


def test_convert_official_pipeline(tmp_path, capsys):
    official = official_state(SMALL, seed=3)
    root = write_pipeline(tmp_path / "pipe", official)
    assert run_command([str(root), str(tmp_path / "out"), "--num-observed", "4", "--num-future", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    model = load_pretrained(tmp_path / "out")
    assert (model.config.num_observed, model.config.num_future, model.config.train_future_k) == (4, 1, 1)
    ours, _ = state_official_to_ours(official)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ours.items())


def test_convert_official_raw_state_dict_with_preset(tmp_path):
    tiny = preset("tiny")
    torch.save(official_state(tiny), tmp_path / "ema.pth")
    with pytest.raises(ValueError, match="--preset"):
        run_command([str(tmp_path / "ema.pth"), str(tmp_path / "out")])
    assert run_command([str(tmp_path / "ema.pth"), str(tmp_path / "out"), "--preset", "tiny"]) == 0
    assert architecture_differences(load_pretrained(tmp_path / "out").config, tiny) == []


# ---------------------------------------------------------------------------------------------
# Official semantics, re-implemented from the official code, on official key names
# ---------------------------------------------------------------------------------------------
def _conv(sd: dict, name: str, x: Tensor, **kw) -> Tensor:
    return F.conv2d(x, sd[name + ".weight"], sd[name + ".bias"], **kw)


def ref_motion_encoder(sd: dict, x: Tensor, n_downs: int) -> Tensor:
    """MotionEncoder.model: conv5-relu, (n_downs-1) x [maxpool-conv5-relu], maxpool-conv7-relu."""
    x = F.relu(_conv(sd, "tde_model.motion_encoder.model.0", x, padding=2))
    index = 2
    for _ in range(n_downs - 1):
        x = F.relu(_conv(sd, f"tde_model.motion_encoder.model.{index + 1}", F.max_pool2d(x, 2), padding=2))
        index += 3
    return F.relu(_conv(sd, f"tde_model.motion_encoder.model.{index + 1}", F.max_pool2d(x, 2), padding=3))


def ref_condition_enc(sd: dict, vo: Tensor, n_downs: int) -> Tensor:
    """DiffModel.condition_enc on the frame differences: (N, To, C, H, W) -> (N, To-1, F, h, w)."""
    diff = vo[:, 1:] - vo[:, :-1]
    return ref_motion_encoder(sd, diff.flatten(0, 1), n_downs).unflatten(0, diff.shape[:2])


def ref_gru_cell(sd: dict, x: Tensor, h: Tensor) -> Tensor:
    """ConvGRUCell: gates on cat(x, h), u first; new_h = (1 - u) h + tanh(NewStateConv(cat(x, r h)))."""
    gates = _conv(sd, "tde_model.conv_gru_cell.GateConv", torch.cat((x, h), 1), padding=1)
    u, r = torch.split(gates, h.shape[1], dim=1)
    u, r = torch.sigmoid(u), torch.sigmoid(r)
    h_tilde = torch.tanh(_conv(sd, "tde_model.conv_gru_cell.NewStateConv", torch.cat((x, r * h), 1), padding=1))
    return (1 - u) * h + h_tilde


def ref_context_encode(sd: dict, vo: Tensor, n_downs: int) -> Tensor:
    feats = ref_condition_enc(sd, vo, n_downs)
    m = torch.zeros_like(feats[:, 0])
    for i in range(feats.shape[1]):
        m = ref_gru_cell(sd, feats[:, i], m)
    return m


def ref_func_net(sd: dict, prefix: str, x: Tensor, n_layers: int) -> Tensor:
    """OdeSdeFuncNet.net: conv, n_layers x [tanh, conv], tanh, conv (indices 0, 2, 4, ...)."""
    x = _conv(sd, f"{prefix}.net.0", x, padding=1)
    for i in range(n_layers + 1):
        x = _conv(sd, f"{prefix}.net.{2 * i + 2}", torch.tanh(x), padding=1)
    return x


def ref_f(sd: dict, x: Tensor, n_layers: int = 2) -> Tensor:
    return ref_func_net(sd, "tde_model.diff_unet.diff_unet_f", x, n_layers)


def ref_g(sd: dict, x: Tensor, n_layers: int = 2) -> Tensor:
    return torch.tanh(ref_func_net(sd, "tde_model.diff_unet.diff_unet_g", x, n_layers))


def ref_timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0)."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / half
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1)


def ref_spade(sd: dict, p: str, x: Tensor, m: Tensor) -> Tensor:
    """MotionCondModule: InstanceNorm2d(affine=False)(x) * (1 + gamma) + beta, m nearest-resized to x."""
    normalized = F.instance_norm(x, eps=1e-5)
    actv = F.relu(_conv(sd, p + "mlp_shared.0", F.interpolate(m, size=x.shape[2:], mode="nearest"), padding=1))
    return normalized * (1 + _conv(sd, p + "mlp_gamma", actv, padding=1)) + _conv(sd, p + "mlp_beta", actv, padding=1)


def ref_resnet(sd: dict, p: str, x: Tensor, temb: Tensor, m: Tensor, groups: int) -> Tensor:
    """ResnetBlock2D with motion conditioning (time_embedding_norm "default", output scale 1)."""
    h = F.silu(F.group_norm(x, groups, sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-5))
    h = _conv(sd, p + "conv1", h, padding=1)
    h = ref_spade(sd, p + "motion_cond_layer.", h, m)
    h = h + F.linear(F.silu(temb), sd[p + "time_emb_proj.weight"], sd[p + "time_emb_proj.bias"])[:, :, None, None]
    h = F.silu(F.group_norm(h, groups, sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-5))
    h = _conv(sd, p + "conv2", h, padding=1)
    if p + "conv_shortcut.weight" in sd:
        x = _conv(sd, p + "conv_shortcut", x)
    return x + h


def ref_attention(sd: dict, p: str, x: Tensor, head_channels: int | None, groups: int) -> Tensor:
    """The deprecated diffusers AttentionBlock: baddbmm scores scaled by 1/sqrt(C / heads), float softmax."""
    b, c, hh, ww = x.shape
    heads = c // head_channels if head_channels is not None else 1
    h = F.group_norm(x, groups, sd[p + "group_norm.weight"], sd[p + "group_norm.bias"], 1e-5)
    h = h.view(b, c, hh * ww).transpose(1, 2)
    q, k, v = (F.linear(h, sd[p + n + ".weight"], sd[p + n + ".bias"]) for n in ("query", "key", "value"))

    def to_batch(t: Tensor) -> Tensor:
        return t.reshape(b, hh * ww, heads, c // heads).permute(0, 2, 1, 3).reshape(b * heads, hh * ww, c // heads)

    q, k, v = to_batch(q), to_batch(k), to_batch(v)
    scores = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1]), q, k.transpose(-1, -2),
                           beta=0, alpha=1 / math.sqrt(c / heads))
    out = torch.bmm(torch.softmax(scores.float(), dim=-1).type(scores.dtype), v)
    out = out.reshape(b, heads, hh * ww, c // heads).permute(0, 2, 1, 3).reshape(b, hh * ww, c)
    out = F.linear(out, sd[p + "proj_attn.weight"], sd[p + "proj_attn.bias"])
    return out.transpose(-1, -2).reshape(b, c, hh, ww) + x


def ref_resnet_prefixes(cfg: dict) -> list[str]:
    """Official resnet prefixes in forward order: down blocks, mid block, up blocks."""
    n, layers = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    down = [f"diffusion_unet.down_blocks.{i}.resnets.{j}." for i in range(n) for j in range(layers)]
    mid = [f"diffusion_unet.mid_block.resnets.{j}." for j in range(2)]
    up = [f"diffusion_unet.up_blocks.{i}.resnets.{j}." for i in range(n) for j in range(layers + 1)]
    return down + mid + up


def ref_unet(sd: dict, cfg: dict, sample: Tensor, timestep, m: Tensor) -> Tensor:
    """UNet2DMotionCond.forward(sample, timestep, m_feat).sample."""
    P = "diffusion_unet."
    channels, groups, layers = cfg["block_out_channels"], cfg["norm_num_groups"], cfg["layers_per_block"]
    heads, n = cfg["attention_head_dim"], len(cfg["block_out_channels"])
    t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], dtype=torch.long)
    t = t[None] if t.dim() == 0 else t
    t = t * torch.ones(sample.shape[0], dtype=t.dtype)
    emb = ref_timestep_embedding(t, channels[0])
    temb = F.silu(F.linear(emb, sd[P + "time_embedding.linear_1.weight"], sd[P + "time_embedding.linear_1.bias"]))
    temb = F.linear(temb, sd[P + "time_embedding.linear_2.weight"], sd[P + "time_embedding.linear_2.bias"])
    x = _conv(sd, P + "conv_in", sample, padding=1)
    res = [x]
    for i, kind in enumerate(cfg["down_block_types"]):
        for j in range(layers):
            x = ref_resnet(sd, f"{P}down_blocks.{i}.resnets.{j}.", x, temb, m, groups)
            if kind == "AttnDownBlock2D":
                x = ref_attention(sd, f"{P}down_blocks.{i}.attentions.{j}.", x, heads[i], groups)
            res.append(x)
        if i < n - 1:
            x = _conv(sd, f"{P}down_blocks.{i}.downsamplers.0.conv", x, stride=2, padding=1)
            res.append(x)
    x = ref_resnet(sd, P + "mid_block.resnets.0.", x, temb, m, groups)
    x = ref_attention(sd, P + "mid_block.attentions.0.", x, heads[-1], groups)
    x = ref_resnet(sd, P + "mid_block.resnets.1.", x, temb, m, groups)
    for i, kind in enumerate(cfg["up_block_types"]):
        for j in range(layers + 1):
            x = ref_resnet(sd, f"{P}up_blocks.{i}.resnets.{j}.", torch.cat([x, res.pop()], 1), temb, m, groups)
            if kind == "AttnUpBlock2D":
                x = ref_attention(sd, f"{P}up_blocks.{i}.attentions.{j}.", x, heads[::-1][i], groups)
        if i < n - 1:
            x = _conv(sd, f"{P}up_blocks.{i}.upsamplers.0.conv", F.interpolate(x, scale_factor=2.0, mode="nearest"),
                      padding=1)
    x = F.silu(F.group_norm(x, groups, sd[P + "conv_norm_out.weight"], sd[P + "conv_norm_out.bias"], 1e-5))
    return _conv(sd, P + "conv_out", x, padding=1)


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """(official weights, our model loaded from an official pipeline folder, inputs)."""
    official = official_state(SMALL, seed=4)
    root = write_pipeline(tmp_path_factory.mktemp("official") / "pipe", official)
    model = load_official(root).eval()
    gen = torch.Generator().manual_seed(5)
    frames = torch.rand(2, SMALL.num_observed, 3, 16, 16, generator=gen) * 2 - 1
    return official, model, frames, gen


@pytest.fixture(autouse=True)
def reference_ops(monkeypatch):
    monkeypatch.setattr(ops._dispatch, "ENV_BACKEND", "reference")


def test_parity_motion_features(parity):
    official, model, frames, _ = parity
    with torch.no_grad():
        assert_rel(model.motion_features(frames), ref_condition_enc(official, frames, SMALL.motion.n_downs))


def test_parity_conv_gru_state(parity):
    official, model, frames, _ = parity
    with torch.no_grad():
        ref = ref_context_encode(official, frames, SMALL.motion.n_downs)
        assert_rel(model.encode_context(frames), ref)
        assert_rel(model.conv_gru.forward_unfused(model.motion_features(frames)), ref)


def test_parity_drift_and_diffusion(parity):
    official, model, _, gen = parity
    m = torch.randn(3, 32, 4, 4, generator=gen)
    with torch.no_grad():
        assert_rel(model.sde.f(m), ref_f(official, m))
        g = model.sde.g(m)
        assert_rel(g, ref_g(official, m))
        assert g.abs().max() < 1  # the extra tanh


@pytest.mark.parametrize("method", ["euler_heun", "euler"])
def test_parity_one_sde_step(parity, method):
    official, model, _, gen = parity
    y = torch.randn(2, 32, 4, 4, generator=gen)
    dw = 0.3 * torch.randn(1, 2, 32, 4, 4, generator=gen)
    dt = 0.1
    f, g = ref_f(official, y), ref_g(official, y)
    if method == "euler_heun":  # torchsde EulerHeun (Stratonovich), diagonal noise: g_prod = g * dW
        ref = y + dt * f + 0.5 * (g * dw[0] + ref_g(official, y + g * dw[0]) * dw[0])
    else:  # torchsde Euler (Ito)
        ref = y + f * dt + g * dw[0]
    with torch.no_grad():
        out = model.sde.solve(y, 2.0, [2.0 + dt], bm=lambda ta, tb: dw[0], method=method)
    assert_rel(out[0], ref)


class _OfficialDiffUnet(torch.nn.Module):
    """The official DiffUnet's torchsde interface: f/g on flattened states (N, C*H*W)."""

    noise_type = "diagonal"

    def __init__(self, sd: dict, sde_type: str, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.sd, self.sde_type, self.shape = sd, sde_type, shape

    def f(self, t, x):
        return ref_f(self.sd, x.view(-1, *self.shape)).flatten(1)

    def g(self, t, x):
        return ref_g(self.sd, x.view(-1, *self.shape)).flatten(1)


class _GivenIncrements(torchsde.BaseBrownian):
    """A Brownian motion that hands out given increments, one per solver step, in order."""

    __slots__ = ("increments", "calls")

    def __init__(self, increments: Tensor) -> None:
        self.increments, self.calls = increments, 0

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        out = self.increments[self.calls]
        self.calls += 1
        return out

    def __repr__(self) -> str:
        return f"_GivenIncrements({tuple(self.increments.shape)})"

    dtype = property(lambda self: self.increments.dtype)
    device = property(lambda self: self.increments.device)
    shape = property(lambda self: self.increments.shape[1:])
    levy_area_approximation = property(lambda self: "none")


@pytest.mark.parametrize("method, sde_type", [("euler_heun", "stratonovich"), ("euler", "ito")])
def test_parity_sde_solve_against_torchsde(parity, method, sde_type):
    """Several steps with off-grid outputs, against torchsde.sdeint as the official code calls it
    (float32 times, interpolated outputs): our grid="torchsde" mode, same increments."""
    official, model, _, gen = parity
    y0 = torch.randn(2, 32, 4, 4, generator=gen)
    times = [3.25, 3.5]
    n_steps = len(torchsde_grid(3.0, times, 0.1)[0]) - 1
    dw = (math.sqrt(0.1) * torch.randn(n_steps, 2, 32, 4, 4, generator=gen))
    bm, ours_bm = _GivenIncrements(dw.flatten(2)), _GivenIncrements(dw.flatten(2))
    ts = torch.tensor([3.0, *times], dtype=torch.float32)
    with torch.no_grad():
        ref = torchsde.sdeint(_OfficialDiffUnet(official, sde_type, (32, 4, 4)), y0.flatten(1), ts, bm=bm,
                              method=method, dt=0.1, adaptive=False)[1:]
        ours = model.sde.solve(y0, 3.0, times, bm=ours_bm, method=method, grid="torchsde")
    assert bm.calls == ours_bm.calls == n_steps
    assert_rel(ours.flatten(2), ref)


def test_parity_spade_outputs(parity):
    official, model, _, gen = parity
    m = torch.randn(2, 32, 4, 4, generator=gen)
    cache = model.unet.compute_spade(m)
    prefixes = ref_resnet_prefixes(OFFICIAL_SMALL["unet_cfg"])
    assert len(cache) == len(prefixes)
    with torch.no_grad():
        for (gamma, beta), prefix in zip(cache, prefixes, strict=True):
            h = torch.randn(gamma.shape, generator=gen) * 3 + 1
            assert_rel(ops.spade_norm(h, gamma, beta), ref_spade(official, prefix + "motion_cond_layer.", h, m))


@pytest.mark.parametrize("timestep", [0, 537, 999])
def test_parity_unet_epsilon(parity, timestep):
    official, model, _, gen = parity
    sample = torch.randn(2, 6, 16, 16, generator=gen)
    m = torch.randn(2, 32, 4, 4, generator=gen)
    ucfg = OFFICIAL_SMALL["unet_cfg"]
    with torch.no_grad():
        ref = ref_unet(official, ucfg, sample, torch.tensor(timestep), m)
        assert_rel(ref_unet(official, ucfg, sample, timestep, m), ref)
        assert_rel(model.unet(sample, timestep, motion=m), ref)
        assert_rel(model.unet(sample, torch.tensor(timestep), spade=model.unet.compute_spade(m)), ref)
        assert_rel(model.denoise(sample[:, :3], timestep, sample[:, 3:], motion=m), ref)


# Diffusers-0.15 scheduler semantics of the fork: float32 schedule, prev_t = t - T // n.
def _official_alphas_cumprod(num_train: int = 1000) -> Tensor:
    betas = torch.linspace(0.0001, 0.02, num_train, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def _official_timesteps(n: int, num_train: int = 1000) -> list[int]:
    return [k * (num_train // n) for k in range(n)][::-1]


def ref_ddpm_step(eps: Tensor, t: int, x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    ac = _official_alphas_cumprod()
    prev_t = t - 1000 // n
    a_t = ac[t]
    a_prev = ac[prev_t] if prev_t >= 0 else torch.tensor(1.0)
    beta_t, beta_prev = 1 - a_t, 1 - a_prev
    cur_alpha = a_t / a_prev
    cur_beta = 1 - cur_alpha
    x0 = ((x - beta_t ** 0.5 * eps) / a_t ** 0.5).clamp(-1, 1)
    prev = (a_prev ** 0.5 * cur_beta) / beta_t * x0 + cur_alpha ** 0.5 * beta_prev / beta_t * x
    if t > 0:
        noise = torch.randn(eps.shape, generator=generator, dtype=eps.dtype)
        variance = torch.clamp((1 - a_prev) / (1 - a_t) * cur_beta, min=1e-20)
        prev = prev + variance ** 0.5 * noise
    return prev


def ref_ddim_step(eps: Tensor, t: int, x: Tensor, n: int, eta: float, generator: torch.Generator) -> Tensor:
    ac = _official_alphas_cumprod()
    prev_t = t - 1000 // n
    a_t = ac[t]
    a_prev = ac[prev_t] if prev_t >= 0 else torch.tensor(1.0)  # set_alpha_to_one=True
    beta_t = 1 - a_t
    x0 = ((x - beta_t ** 0.5 * eps) / a_t ** 0.5).clamp(-1, 1)
    variance = (1 - a_prev) / beta_t * (1 - a_t / a_prev)
    std = eta * variance ** 0.5
    prev = a_prev ** 0.5 * x0 + (1 - a_prev - std ** 2) ** 0.5 * eps
    if eta > 0:
        prev = prev + std * torch.randn(eps.shape, generator=generator, dtype=eps.dtype)
    return prev


@pytest.mark.parametrize("index", [0, 37, 99])
def test_parity_ddpm_step(index):
    gen = torch.Generator().manual_seed(index)
    x, eps = torch.randn(2, 3, 8, 8, generator=gen) * 0.8, torch.randn(2, 3, 8, 8, generator=gen)
    sampler = make_sampler("ddpm", 100, NoiseSchedule(1000, 1e-4, 0.02))
    assert sampler.timesteps.tolist() == _official_timesteps(100)
    t = _official_timesteps(100)[index]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)) if sampler.needs_noise(t) else None
    ours = sampler.step(eps, t, x, noise=z).prev_sample
    assert_rel(ours, ref_ddpm_step(eps, t, x, 100, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("index", [0, 24, 49])
def test_parity_ddim_step(index, eta):
    gen = torch.Generator().manual_seed(index)
    x, eps = torch.randn(2, 3, 8, 8, generator=gen) * 0.8, torch.randn(2, 3, 8, 8, generator=gen)
    sampler = make_sampler("ddim", 50, NoiseSchedule(1000, 1e-4, 0.02), eta=eta)
    assert sampler.timesteps.tolist() == _official_timesteps(50)
    t = _official_timesteps(50)[index]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)) if sampler.needs_noise(t) else None
    ours = sampler.step(eps, t, x, noise=z).prev_sample
    assert_rel(ours, ref_ddim_step(eps, t, x, 50, eta, torch.Generator().manual_seed(7)))
