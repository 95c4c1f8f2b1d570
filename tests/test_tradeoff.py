"""stdiff.metrics.quality_vs_speed: per-setting quality and diversity against independent numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stdiff import Predictor
from stdiff.metrics import psnr, quality_vs_speed, ssim


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained("tiny", dtype=torch.float32)


def test_quality_vs_speed_rows(predictor):
    cfg = predictor.config
    to = cfg.num_observed
    clips = torch.rand(2, to + 2, cfg.channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0))
    rows = quality_vs_speed(predictor, clips, to, [("ddim", 1, "float32"), ("ddim", 2, torch.bfloat16)],
                            num_samples=3, seed=4, official_ssim=True, warmup=False)
    assert [r["method"] for r in rows] == ["model", "model", "copy_last"]
    assert [r["dtype"] for r in rows] == ["float32", "bfloat16", None] and predictor.dtype == torch.float32
    truth = clips[:, to:]
    pred = predictor.predict(clips[:, :to], times=[to, to + 1], num_samples=3, sampler="ddim", steps=1, seed=4,
                             progress=False).frames.double().numpy()
    first = rows[0]
    target = truth[:, None].expand(2, 3, *truth.shape[1:])
    assert first["psnr"] == pytest.approx(psnr(torch.tensor(pred), target.double()).mean().item(), rel=1e-5)
    assert first["ssim"] == pytest.approx(ssim(torch.tensor(pred), target.double(), official=True).mean().item(),
                                          rel=1e-5)
    assert first["pixel_std"] == pytest.approx(pred.std(axis=1).mean(), rel=1e-5)
    l1 = np.mean([np.abs(pred[:, i] - pred[:, j]).mean() for i, j in ((0, 1), (0, 2), (1, 2))])
    assert first["pairwise_l1"] == pytest.approx(l1, rel=1e-5)
    assert first["frames_per_second"] == pytest.approx(2 * 3 * 2 / first["seconds"])
    base = rows[-1]
    copy = clips[:, to - 1:to].expand_as(truth)
    assert base["psnr"] == pytest.approx(psnr(copy, truth).mean().item(), rel=1e-6)
    assert base["pixel_std"] == 0 and base["pairwise_l1"] is None and base["frames_per_second"] is None


def test_quality_vs_speed_bad_input(predictor):
    cfg = predictor.config
    clips = torch.rand(1, cfg.num_observed + 1, cfg.channels, cfg.image_size, cfg.image_size)
    with pytest.raises(ValueError, match="num_observed must be an int in"):
        quality_vs_speed(predictor, clips, clips.shape[1], [("ddim", 1, "float32")])
    with pytest.raises(ValueError, match="settings must be a non-empty list"):
        quality_vs_speed(predictor, clips, cfg.num_observed, [])
    with pytest.raises(ValueError, match="dtype must be one of"):
        quality_vs_speed(predictor, clips, cfg.num_observed, [("ddim", 1, "int8")])
    assert predictor.dtype == torch.float32
