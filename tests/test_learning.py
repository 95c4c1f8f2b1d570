"""A model that cannot learn is caught: a short training run must beat "copy the last frame".

A ~0.2 M parameter model fits 4 synthetic 16x16 clips with the official objective for a few
hundred Adam steps. Then, at diffusion steps where the noisy frame alone hides most of the digits
(t = 300, 500), its estimate of the clean next frame, ``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``,
must be clearly closer to the true next frame than the last observed frame is. A broken loss,
noise schedule or conditioning (previous frame, motion, timestep embedding) fails this.
"""
from __future__ import annotations

import pytest
import torch

from stdiff.config import preset
from stdiff.data import SyntheticMovingDigits
from stdiff.models import STDiff


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: waiting OpenMP threads cost more than they give
    yield
    torch.set_num_threads(threads)


def _micro_model() -> STDiff:
    cfg = preset("tiny")
    cfg.image_size, cfg.num_observed, cfg.num_future, cfg.train_future_k = 16, 3, 1, 1
    cfg.motion.model_channels = 4
    cfg.sde.dt = 0.5
    cfg.loss_weighting = "none"
    cfg.unet.block_out_channels, cfg.unet.attention_head_dim, cfg.unet.norm_num_groups = [8, 16, 16], [None, None, 8], 4
    return STDiff(cfg.validate())


@torch.no_grad()
def _x0_error(model: STDiff, observed: torch.Tensor, target: torch.Tensor, step: int) -> float:
    """Mean squared error of the model's clean-frame estimate at diffusion step ``step``."""
    generator = torch.Generator().manual_seed(step)
    noise = torch.randn(target.shape, generator=generator)
    steps = torch.full((target.shape[0],), step)
    x_t = model.schedule.add_noise(target, noise, steps)
    motion = model.future_motion(model.encode_context(observed), observed.shape[1] - 1, [observed.shape[1]])[0]
    eps = model.denoise(x_t, steps, observed[:, -1], motion=motion)
    abar = model.schedule.alpha_bar(step)
    x0 = ((x_t - (1 - abar) ** 0.5 * eps) / abar ** 0.5).clamp(-1, 1)
    return ((x0 - target) ** 2).mean().item()


def test_short_training_beats_copy_last():
    torch.manual_seed(0)
    model = _micro_model()
    clips = torch.stack([SyntheticMovingDigits(num_videos=4, num_frames=4, image_size=16, seed=3)[i]
                         for i in range(4)]) * 2 - 1
    observed, target = clips[:, :3], clips[:, 3]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        optimizer.zero_grad(set_to_none=True)
        model.training_loss(observed, clips[:, 3:], generator=generator).backward()
        optimizer.step()
    model.eval()
    copy_last = ((observed[:, -1] - target) ** 2).mean().item()
    errors = {step: _x0_error(model, observed, target, step) for step in (300, 500)}
    assert all(error < 0.6 * copy_last for error in errors.values()), (errors, copy_last)
