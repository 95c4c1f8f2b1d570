"""stdiff.training.quickeval: one-step MSEs, predicted through the pipeline."""
from __future__ import annotations

import pytest
import torch

from stdiff.config import preset
from stdiff.models import STDiff
from stdiff.pipeline import sample
from stdiff.training.quickeval import one_step_mse


def test_one_step_mse_scores_the_pipelines_first_frame():
    torch.manual_seed(0)
    model = STDiff(preset("tiny")).eval()
    to = model.config.num_observed
    clips = torch.rand(3, to + 1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    out = one_step_mse(model, clips, sampler="ddim", steps=2, num_samples=2, batch_size=2, seed=4)
    generator = torch.Generator().manual_seed(4)
    pred = torch.cat([sample(model, clips[i:i + 2, :to], [float(to)], 2, "ddim", 2, generator=generator).frames
                      for i in (0, 2)])[:, :, 0]                               # (N, S, C, H, W) in [0, 1]
    target = clips[:, to]
    assert out["clips"] == 3 and out["num_samples"] == 2
    assert out["model_mse"] == pytest.approx(float(((pred - target[:, None]) ** 2).mean()), rel=1e-5)
    assert out["model_mean_mse"] == pytest.approx(float(((pred.mean(1) - target) ** 2).mean()), rel=1e-5)
    assert out["copy_last_mse"] == pytest.approx(float(((clips[:, to - 1] - target) ** 2).mean()), rel=1e-6)
    assert out["blank_mse"] == pytest.approx(float((target ** 2).mean()), rel=1e-6)
