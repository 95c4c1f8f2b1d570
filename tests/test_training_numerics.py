"""Training numerics: the motion path stays float32 under bf16 autocast."""
from __future__ import annotations

import torch

from stdiff.config import preset
from stdiff.models import STDiff


def _small_model() -> STDiff:
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.motion.model_channels = 4
    cfg.unet.block_out_channels = [8, 16, 16]
    cfg.unet.attention_head_dim = [None, None, 8]
    cfg.unet.norm_num_groups = 4
    model = STDiff(cfg)
    with torch.no_grad():  # a drift that bf16 state updates would round away
        model.sde.drift.net[-1].bias.fill_(0.02)
    return model


def test_motion_path_is_float32_under_bf16_autocast():
    model = _small_model()
    clips = torch.rand(2, model.config.num_observed + model.config.num_future, 1, 32, 32) * 2 - 1
    seen = {}

    def capture(_module, args, kwargs):
        seen["motion"] = kwargs["motion"]
        return args, kwargs

    model.unet.register_forward_pre_hook(capture, with_kwargs=True)
    to = model.config.num_observed
    generator = torch.Generator().manual_seed(0)
    model.training_loss(clips[:, :to], clips[:, to:], generator=generator)
    exact = seen["motion"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.training_loss(clips[:, :to], clips[:, to:], generator=torch.Generator().manual_seed(0))
    assert seen["motion"].dtype == torch.float32
    torch.testing.assert_close(seen["motion"], exact, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert model.motion_encoder.model[0].weight.grad.abs().sum() > 0
