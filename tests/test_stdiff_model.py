"""The full STDiff model on the tiny preset, and the official parameter counts of the presets."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from stdiff.config import STDiffConfig, preset, preset_names
from stdiff.models import STDiff
from stdiff.noise import NoiseStreams
from stdiff.pipeline import sample

REFERENCE = Path(__file__).resolve().parent / "data"  # copies of shared/reference/official_keys_*.txt


def _official_counts(name: str) -> dict[str, int]:
    text = (REFERENCE / f"official_keys_{name}.txt").read_text()
    return {k: int(v) for k, v in re.findall(r"# params\.(\w+) = (\d+)", text)}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["kth64", "cityscapes128"])
def test_official_parameter_counts(name):
    counts = _official_counts(name)
    with torch.device("meta"):
        model = STDiff(preset(name))
    assert _count(model) == counts["total"]
    assert _count(model.motion_encoder) == counts["motion_encoder"]
    assert _count(model.conv_gru) == counts["conv_gru_cell"]
    assert _count(model.sde.drift) == counts["sde_drift_f"]
    assert _count(model.sde.diffusion) == counts["sde_diffusion_g"]
    assert _count(model.unet) == counts["diffusion_unet_total"]


@pytest.mark.parametrize("name", preset_names())
def test_presets_build_and_roundtrip(name):
    cfg = preset(name)
    assert STDiffConfig.from_dict(cfg.to_dict()) == cfg
    with torch.device("meta"):
        model = STDiff(cfg)
    x = torch.empty(1, cfg.channels * 2, cfg.image_size, cfg.image_size, device="meta")
    m = torch.empty(1, cfg.motion_channels, cfg.motion_size, cfg.motion_size, device="meta")
    assert model.unet(x, 10, motion=m).shape == (1, cfg.channels, cfg.image_size, cfg.image_size)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        preset("tiny", channels=2)
    with pytest.raises(ValueError, match="unknown STDiffConfig keys"):
        STDiffConfig.from_dict({"imagesize": 3})


@pytest.fixture(scope="module")
def tiny() -> STDiff:
    torch.manual_seed(0)
    return STDiff(preset("tiny"))


def _clip(n: int = 2, t: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, t, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_training_loss_forward_backward(tiny):
    loss = tiny.training_loss(_clip(2, 4), _clip(2, 6, 1), generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in tiny.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:10])
    assert tiny.unet.conv_in.weight.grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


def test_spade_cache_is_bit_identical(tiny):
    m = torch.randn(3, tiny.config.motion_channels, 8, 8)
    x = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        a = tiny.unet(x, 500, motion=m)
        b = tiny.unet(x, 500, spade=tiny.unet.compute_spade(m))
    assert torch.equal(a, b)


def test_sampling_shapes_seeds_and_fractional_times(tiny):
    obs = (_clip(2, 4) + 1) / 2
    times = [4, 4.5, 5.25]

    def run(seed):
        return sample(tiny, obs, times, num_samples=3, sampler="ddim", steps=3,
                      generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert a.frames.shape == (2, 3, 3, 1, 32, 32) and a.motion.shape == (2, 3, 3, tiny.config.motion_channels, 8, 8)
    assert torch.isfinite(a.frames).all() and a.frames.min() >= 0 and a.frames.max() <= 1
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)
    assert not torch.equal(a.frames[:, 0], a.frames[:, 1])  # samples of one video differ


def test_cached_sampling_equals_uncached(tiny):
    obs = (_clip(1, 4) + 1) / 2
    kw = dict(times=[4, 5], num_samples=2, sampler="ddpm", steps=4)
    a = sample(tiny, obs, generator=torch.Generator().manual_seed(0), exact=False, **kw)
    b = sample(tiny, obs, generator=torch.Generator().manual_seed(0), exact=True, **kw)
    assert torch.equal(a.frames, b.frames)


def test_sampling_with_noise_streams_is_prefix_stable(tiny):
    """Sample s of video v depends only on (seed, v, s): more samples or videos leave it unchanged."""
    obs = (_clip(2, 4) + 1) / 2
    kw = dict(times=[4, 5], sampler="ddpm", steps=3)
    four = sample(tiny, obs, num_samples=4, noise=NoiseStreams.for_videos(3, 2, 4), **kw).frames
    two = sample(tiny, obs, num_samples=2, noise=NoiseStreams.for_videos(3, 2, 2), **kw).frames
    first = sample(tiny, obs[:1], num_samples=2, noise=NoiseStreams.for_videos(3, 1, 2), **kw).frames
    # the same noise; only float rounding of convolutions over another batch size differs
    torch.testing.assert_close(four[:, :2], two, atol=1e-4, rtol=0)
    torch.testing.assert_close(first, two[:1], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="either noise or generator"):
        sample(tiny, obs, noise=NoiseStreams.for_videos(3, 2, 1), generator=torch.Generator(), **kw)
    with pytest.raises(ValueError, match="noise must have one stream per batch row, videos x samples = 4"):
        sample(tiny, obs, num_samples=2, noise=NoiseStreams.for_videos(3, 2, 1), **kw)


def test_the_model_computes_and_the_pipeline_predicts():
    """diffusers' split: the model module does not import the samplers or the loop (issue 22)."""
    import ast
    import inspect

    import stdiff.models.stdiff as module

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(module)))
                if isinstance(node, ast.ImportFrom)}
    assert not any(name and ("sampling" in name or "pipeline" in name) for name in imported), imported
    assert not hasattr(STDiff, "sample") and not hasattr(STDiff, "generate")


def test_set_backend_reaches_every_fused_op(tiny, monkeypatch):
    """A model set to "reference" runs every fused op there, without touching the environment;
    another model in the same process keeps its own backend."""
    import copy
    import os

    from stdiff.ops import reference
    from stdiff.ops.contract import OP_NAMES

    calls: dict[str, int] = {}
    for op in OP_NAMES:
        original = getattr(reference, op)

        def counted(*args, _op=op, _original=original, **kwargs):
            calls[_op] = calls.get(_op, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(reference, op, counted)
    ref_model = copy.deepcopy(tiny).set_backend("reference")
    assert ref_model.backend == ref_model.conv_gru.backend == ref_model.sde.backend == "reference"
    assert all(r.backend == "reference" for r in ref_model.unet._spade_resnets())
    env = dict(os.environ)
    sample(ref_model, (_clip(1, 4) + 1) / 2, [4], steps=1, generator=torch.Generator().manual_seed(0))
    assert set(calls) == set(OP_NAMES)
    assert dict(os.environ) == env and tiny.backend == "auto"
    calls.clear()
    explicit_cpu = copy.deepcopy(tiny).set_backend("cpu")
    sample(explicit_cpu, (_clip(1, 4) + 1) / 2, [4], steps=1, generator=torch.Generator().manual_seed(0))
    assert calls == {}
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        tiny.set_backend("fastest")
