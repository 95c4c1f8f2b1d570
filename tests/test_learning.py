"""A model that cannot learn is caught: a short training run must beat "copy the last frame".

A ~0.7 M parameter model trains a few hundred steps on 4 synthetic 16x16 clips, then predicts
their first future frame; its mean squared error must be clearly below copy-last's on those clips.
A broken loss, sampler or conditioning (noise schedule, previous frame, timestep) fails this.
"""
from __future__ import annotations

import torch

from stdiff.training import TrainConfig, build_train_data, train

MICRO = {
    "image_size": 16, "num_observed": 3, "num_future": 2, "train_future_k": 2,
    "motion": {"model_channels": 8, "activation": "leaky_relu"}, "sde": {"dt": 0.5},
    "unet": {"block_out_channels": [16, 32, 32], "attention_head_dim": [None, None, 16], "norm_num_groups": 4},
}


def test_short_training_beats_copy_last(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(preset="tiny", model=MICRO, data="synthetic", num_videos=4, steps=300, batch_size=4,
                      lr=3e-3, warmup_steps=20, ema_max_decay=0.0, device="cpu", workers=0, save_every=0,
                      export_every=0, preview_every=0, log_every=100, out=str(tmp_path / "run"))
    model = train(cfg).ema_model.eval()
    clips = torch.stack([build_train_data(cfg)[i] for i in range(4)]) * 2 - 1
    to = model.config.num_observed
    generator = torch.Generator().manual_seed(0)
    pred = model.sample(clips[:, :to], [float(to)], num_samples=2, sampler="ddim", steps=20, generator=generator)
    target = clips[:, to]
    model_mse = ((pred[:, :, 0] - target[:, None]) ** 2).mean().item()
    copy_mse = ((clips[:, to - 1] - target) ** 2).mean().item()
    assert model_mse < 0.5 * copy_mse, (model_mse, copy_mse)
