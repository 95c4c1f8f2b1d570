"""Tests of the SPADE diffusion UNet (stdiff.models.unet): official parity of the parameter
layout, forward/backward, the SPADE cache, attention and SPADE semantics, input validation."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff.models.attention import AttentionBlock
from stdiff.models.unet import SpadeCache, SpadeUNet
from stdiff.models.unet_blocks import SpadeResnetBlock, timestep_embedding

# Official STDiff UNet configs (stdiff/configs/{kth,cityscapes}_train_config.yaml) and the facts
# of their ``diffusion_unet.*`` state dict (shared/reference/official_keys_*.txt, built by the
# official code on the meta device): parameter counts, number of keys and the sha256 of the
# lines "key<TAB>[shape]" (prefix stripped, state-dict order, newline-terminated).
OFFICIAL = {
    "kth64": dict(
        config=dict(
            sample_size=64, in_channels=6, out_channels=3, m_channels=256, layers_per_block=2,
            block_out_channels=[128, 256, 256, 512, 512],
            down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                              "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            attention_head_dim=[None, 128, 128, 128, 128],
        ),
        total=194157379, spade=75229376, without_spade=118928003, num_keys=702,
        sha256="a36c9c23c23b4b1527c04cd019d9de9fefa1e8b1b4170d80db5c85dedb99b9ab",
    ),
    "cityscapes128": dict(
        config=dict(
            sample_size=128, in_channels=6, out_channels=3, m_channels=256, layers_per_block=2,
            block_out_channels=[256, 256, 512, 768, 1024],
            down_block_types=["DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
            attention_head_dim=[None, None, None, 192, 256],
        ),
        total=537272579, spade=174041856, without_spade=363230723, num_keys=604,
        sha256="5efb00623859ba763b08ba63d512d43d6e4ea1b1dc419214c67b47d7d4138885",
    ),
}
REFERENCE_DIR = Path(__file__).resolve().parent / "data"  # copies of shared/reference: per-key diff

TINY = dict(
    sample_size=32, in_channels=2, out_channels=1, m_channels=64, block_out_channels=[32, 64, 64],
    down_block_types=["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    attention_head_dim=[None, None, 32], norm_num_groups=8,
)


@pytest.fixture(scope="module")
def tiny() -> SpadeUNet:
    torch.manual_seed(0)
    model = SpadeUNet(**TINY)
    # Non-trivial GroupNorm affines so that every parameter influences the output.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _inputs(n: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 32, 32, generator=g), torch.randn(n, 64, 8, 8, generator=g)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_state_dict_layout_and_counts(name: str) -> None:
    facts = OFFICIAL[name]
    cfg = facts["config"]
    with torch.device("meta"):
        model = SpadeUNet(**cfg)
    lines = [f"{k}\t{list(v.shape)}" for k, v in model.state_dict().items()]
    reference = REFERENCE_DIR / f"official_keys_{name}.txt"
    if reference.is_file():
        prefix = "diffusion_unet."
        expected = [ln[len(prefix):] for ln in reference.read_text().splitlines() if ln.startswith(prefix)]
        assert lines == expected
    assert len(lines) == facts["num_keys"]
    assert hashlib.sha256("".join(ln + "\n" for ln in lines).encode()).hexdigest() == facts["sha256"]
    total = sum(p.numel() for p in model.parameters())
    spade = sum(p.numel() for n, p in model.named_parameters() if ".motion_cond_layer." in n)
    assert (total, spade, total - spade) == (facts["total"], facts["spade"], facts["without_spade"])
    # The mid block's attention uses the last attention_head_dim entry (not visible in the keys).
    assert model.mid_block.attentions[0].num_heads == cfg["block_out_channels"][-1] // cfg["attention_head_dim"][-1]


def _wave(shape: tuple[int, ...], phase: float) -> torch.Tensor:
    n = math.prod(shape)
    return torch.sin(torch.arange(n, dtype=torch.float64) * 0.7311 + phase).reshape(shape).float()


def test_matches_official_golden_values() -> None:
    """Outputs of the official UNet2DMotionCond (XiYe20/CustomDiffusers) for TINY with
    deterministic weights (state-dict order k: matrices sin-wave / sqrt(fan_in), norm weights
    1 + 0.1 wave, other vectors 0.1 wave) on deterministic inputs, recorded with the fork."""
    model = SpadeUNet(**TINY).eval()
    with torch.no_grad():
        for k, (name, p) in enumerate(model.state_dict().items()):
            w = _wave(tuple(p.shape), k)
            if p.dim() > 1:
                p.copy_(w / math.sqrt(math.prod(p.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * w)
            else:
                p.copy_(0.1 * w)
        out = model(_wave((2, 2, 32, 32), 0.5), torch.tensor([7, 731]), motion=_wave((2, 64, 8, 8), 1.5))
    got = torch.cat([out.mean()[None], out.abs().mean()[None], out[0, 0, 0, :4], out[1, 0, 17, 20:24],
                     out[1, 0, 31, 28:]])
    official = torch.tensor([
        -0.10618680715560913, 0.28488099575042725,
        0.45530301332473755, 0.9957716464996338, 0.7851170301437378, 0.19791695475578308,
        -0.1886894851922989, -0.12786772847175598, -0.0019721761345863342, -0.045733675360679626,
        -0.8247280120849609, -0.3575480580329895, -0.014698520302772522, -0.06561313569545746,
    ])
    torch.testing.assert_close(got, official, rtol=1e-4, atol=1e-4)


def test_config_round_trip(tiny: SpadeUNet) -> None:
    cfg = json.loads(json.dumps(tiny.config))
    clone = SpadeUNet.from_config(cfg)
    clone.load_state_dict(tiny.state_dict())
    x, m = _inputs()
    with torch.no_grad():
        assert torch.equal(clone(x, 10, motion=m), tiny(x, 10, motion=m))
    assert clone.config == tiny.config


def test_forward_shape_finite_backward(tiny: SpadeUNet) -> None:
    x, m = _inputs()
    m.requires_grad_(True)
    tiny.zero_grad()
    out = tiny(x, torch.tensor([3, 999]), motion=m)
    assert out.shape == (2, 1, 32, 32)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert m.grad is not None and torch.isfinite(m.grad).all() and m.grad.abs().sum() > 0
    for name, p in tiny.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    tiny.zero_grad()


def test_cached_equals_uncached_bitwise(tiny: SpadeUNet) -> None:
    x, m = _inputs(3)
    t = torch.tensor([0, 500, 999])
    with torch.no_grad():
        cache = tiny.compute_spade(m, (32, 32))
        assert isinstance(cache, SpadeCache) and len(cache) == tiny.num_resnets == 6 + 2 + 9
        assert torch.equal(tiny(x, t, spade=cache), tiny(x, t, motion=m))
        # Default size = sample_size; the cache does not depend on the timestep.
        assert torch.equal(tiny(x, 7, spade=tiny.compute_spade(m)), tiny(x, 7, motion=m))


def test_without_motion_skips_spade_like_the_official_m_feat_none(tiny: SpadeUNet) -> None:
    """motion=None: every resnet is conv1 -> + time bias -> norm2 (no instance norm, no gamma/beta),
    as the official ResnetBlock2D with m_feat=None; checked against a hand-written resnet."""
    x, m = _inputs()
    resnet = tiny.down_blocks[0].resnets[0]
    temb_act = torch.randn(2, resnet.time_emb_proj.in_features)
    block_in = torch.randn(2, resnet.norm1.num_channels, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        h = resnet.conv1(F.silu(resnet.norm1(block_in)))
        h = h + resnet.time_emb_proj(temb_act)[:, :, None, None]
        h = resnet.conv2(F.silu(resnet.norm2(h)))
        expected = (block_in if resnet.conv_shortcut is None else resnet.conv_shortcut(block_in)) + h
        assert torch.equal(resnet(block_in, temb_act, None, None), expected)
        plain = tiny(x, 5)
        assert plain.shape == (2, 1, 32, 32) and torch.isfinite(plain).all()
        assert not torch.allclose(plain, tiny(x, 5, motion=m))
        # the SPADE parameters have no influence without motion
        state = {k: v.clone() for k, v in tiny.state_dict().items()}
        for name, p in tiny.named_parameters():
            if "motion_cond_layer" in name:
                p.add_(1.0)
        try:
            assert torch.equal(tiny(x, 5), plain)
        finally:
            tiny.load_state_dict(state)


def test_timestep_forms_broadcast(tiny: SpadeUNet) -> None:
    x, m = _inputs()
    with torch.no_grad():
        cache = tiny.compute_spade(m)
        ref = tiny(x, torch.tensor([42, 42]), spade=cache)
        for t in (42, 42.0, torch.tensor(42), torch.tensor([42.0]), torch.tensor([42, 42], dtype=torch.int32)):
            assert torch.equal(tiny(x, t, spade=cache), ref), t
        assert not torch.equal(tiny(x, 42.5, spade=cache), ref)  # fractional steps are kept


def test_timestep_embedding_values() -> None:
    t = torch.tensor([0.0, 3.0])
    emb = timestep_embedding(t, 8, flip_sin_to_cos=True, freq_shift=0)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    unflipped = timestep_embedding(t, 9, flip_sin_to_cos=False, freq_shift=1)
    assert unflipped.shape == (2, 9) and torch.equal(unflipped[:, -1], torch.zeros(2))
    torch.testing.assert_close(unflipped[1, 1], torch.sin(3 * torch.exp(torch.tensor(-math.log(10000.0) / 3))))


@settings(max_examples=10, deadline=None)
@given(
    heads=st.integers(1, 4), head_dim=st.sampled_from([4, 8]), hw=st.sampled_from([(1, 1), (2, 3), (4, 4)]),
    single=st.booleans(), seed=st.integers(0, 2**16),
)
def test_attention_block_matches_naive(heads: int, head_dim: int, hw: tuple[int, int], single: bool,
                                       seed: int) -> None:
    torch.manual_seed(seed)
    c = heads * head_dim
    block = AttentionBlock(c, None if single else head_dim, num_groups=2, eps=1e-5, rescale_output_factor=1.5)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, c, *hw, dtype=torch.float64)
    block = block.double()
    nh = 1 if single else heads
    d = c // nh
    tok = F.group_norm(x, 2, block.group_norm.weight, block.group_norm.bias, 1e-5).flatten(2).transpose(1, 2)
    q, k, v = (lin(tok).view(2, -1, nh, d).transpose(1, 2) for lin in (block.query, block.key, block.value))
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    att = block.proj_attn((probs @ v).transpose(1, 2).reshape(2, -1, c))
    expected = (att.transpose(1, 2).reshape(x.shape) + x) / 1.5
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


def test_zero_gamma_beta_is_instance_norm() -> None:
    torch.manual_seed(0)
    block = SpadeResnetBlock(16, 24, temb_channels=12, m_channels=8, num_groups=4, eps=1e-5)
    x = torch.randn(3, 16, 8, 8)
    temb_act = F.silu(torch.randn(3, 12))
    zeros = torch.zeros(3, 24, 8, 8)
    with torch.no_grad():
        h = block.conv1(F.silu(block.norm1(x)))
        h = F.instance_norm(h, eps=1e-5) + block.time_emb_proj(temb_act)[:, :, None, None]
        expected = block.conv_shortcut(x) + block.conv2(F.silu(block.norm2(h)))
        torch.testing.assert_close(block(x, temb_act, zeros, zeros), expected, rtol=1e-5, atol=1e-5)
        # Zeroed gamma/beta convs give an all-zero cache, whatever the motion.
        for conv in (block.motion_cond_layer.mlp_gamma, block.motion_cond_layer.mlp_beta):
            conv.weight.zero_()
            conv.bias.zero_()
        gamma, beta = block.motion_cond_layer(torch.randn(3, 8, 8, 8))
        assert torch.equal(gamma, zeros) and torch.equal(beta, zeros)


def test_non_square_and_other_resolution(tiny: SpadeUNet) -> None:
    x = torch.randn(1, 2, 16, 48)
    m = torch.randn(1, 64, 5, 7)
    with torch.no_grad():
        cache = tiny.compute_spade(m, (16, 48))
        assert cache[0][0].shape == (1, 32, 16, 48) and cache[-1][1].shape == (1, 32, 16, 48)
        out = tiny(x, 1, spade=cache)
        assert out.shape == (1, 1, 16, 48) and torch.equal(out, tiny(x, 1, motion=m))


def test_input_validation(tiny: SpadeUNet) -> None:
    x, m = _inputs()
    cache = tiny.compute_spade(m)
    with pytest.raises(ValueError, match="at most one"):
        tiny(x, 1, motion=m, spade=cache)
    with pytest.raises(ValueError, match="sample"):
        tiny(torch.randn(2, 3, 32, 32), 1, motion=m)
    with pytest.raises(ValueError, match="sample"):
        tiny(torch.randn(2, 2, 30, 32), 1, motion=m)
    with pytest.raises(ValueError, match="sample"):
        tiny(torch.randn(2, 32, 32), 1, motion=m)
    with pytest.raises(ValueError, match="motion"):
        tiny(x, 1, motion=torch.randn(2, 63, 8, 8))
    with pytest.raises(ValueError, match="spade pair 0"):
        tiny(x[:1], 1, spade=cache)
    with pytest.raises(ValueError, match="spade pair"):
        tiny(torch.randn(2, 2, 64, 64), 1, spade=cache)
    with pytest.raises(TypeError, match="spade"):
        tiny(x, 1, spade=list(cache))
    with pytest.raises(ValueError, match="timestep"):
        tiny(x, torch.tensor([1, 2, 3]), spade=cache)
    with pytest.raises(TypeError, match="timestep"):
        tiny(x, True, spade=cache)
    with pytest.raises(ValueError, match="size"):
        tiny.compute_spade(m, (18, 20))


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"down_block_types": ["DownBlock2D", "DownBlock2D"]}, "down_block_types"),
        ({"up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}, "up_block_types"),
        ({"attention_head_dim": [None, None, 24]}, "attention_head_dim"),
        ({"attention_head_dim": 32}, "attention_head_dim"),
        ({"norm_num_groups": 24}, "norm_num_groups"),
        ({"m_channels": 0}, "m_channels"),
        ({"block_out_channels": []}, "block_out_channels"),
        ({"sample_size": -4}, "sample_size"),
    ],
)
def test_constructor_validation(change: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        SpadeUNet(**{**TINY, **change})
