"""A model that cannot learn is caught: a short training run must beat "copy the last frame".

A ~0.2 M parameter model fits 4 synthetic 16x16 clips for a few hundred Adam steps, generating the
frame (the official objective) or its change from the conditioning frame (``diffusion_target:
residual``). Then, at diffusion steps where the noisy sample alone hides most of the digits
(t = 300, 500), its estimate of the clean sample, ``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``,
turned into a frame, must be clearly closer to the true next frame than the last observed frame is. A broken loss,
noise schedule or conditioning (previous frame, motion, timestep embedding) fails this.
The residual (mostly zeros) is hidden by less noise than the frame, and a micro model learns it
more slowly: it is judged at t = 100, 300 after 600 steps (at t = 500 it stays near copy-last).
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


def _micro_model(diffusion_target: str) -> STDiff:
    cfg = preset("tiny", diffusion_target=diffusion_target, cond_noise=0.0)
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
    cond = observed[:, -1]
    x_t = model.schedule.add_noise(model.to_target(target, cond), noise, steps)
    motion = model.future_motion(model.encode_context(observed), observed.shape[1] - 1, [observed.shape[1]])[0]
    eps = model.denoise(x_t, steps, cond, motion=motion)
    abar = model.schedule.alpha_bar(step)
    x0 = ((x_t - (1 - abar) ** 0.5 * eps) / abar ** 0.5).clamp(-1, 1)
    return ((model.from_target(x0, cond) - target) ** 2).mean().item()


@pytest.mark.parametrize(("diffusion_target", "train_steps", "diffusion_steps"),
                         [("frame", 300, (300, 500)), ("residual", 600, (100, 300))])
def test_short_training_beats_copy_last(diffusion_target: str, train_steps: int, diffusion_steps: tuple[int, ...]):
    torch.manual_seed(0)
    model = _micro_model(diffusion_target)
    clips = torch.stack([SyntheticMovingDigits(num_videos=4, num_frames=4, image_size=16, seed=3)[i]
                         for i in range(4)]) * 2 - 1
    observed, target = clips[:, :3], clips[:, 3]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(train_steps):
        optimizer.zero_grad(set_to_none=True)
        model.training_loss(observed, clips[:, 3:], generator=generator).backward()
        optimizer.step()
    model.eval()
    copy_last = ((observed[:, -1] - target) ** 2).mean().item()
    errors = {step: _x0_error(model, observed, target, step) for step in diffusion_steps}
    assert all(error < 0.6 * copy_last for error in errors.values()), (errors, copy_last)
