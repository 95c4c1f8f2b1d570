"""Presets and dataset recipes: one source of truth for clip lengths, k, size and channels."""
from __future__ import annotations

import pytest

from stdiff.config import PRESETS, preset
from stdiff.data import RECIPES


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_reads_its_preset(name: str):
    recipe = RECIPES[name]
    model = PRESETS[recipe.preset]
    assert (recipe.num_observed, recipe.num_future, recipe.k, recipe.image_size, recipe.channels) == (
        model.num_observed, model.num_future, model.train_future_k, model.image_size, model.channels)


def test_kitti_trains_on_two_of_five_future_frames():
    cfg = preset("kitti128")
    assert (cfg.num_observed, cfg.num_future, cfg.train_future_k) == (4, 5, 2)


def test_motion_activation_is_validated():
    cfg = preset("tiny")
    cfg.motion.activation = "gelu"
    with pytest.raises(ValueError, match="motion.activation"):
        cfg.validate()


def test_leaky_motion_encoder_keeps_the_official_keys():
    import torch

    from stdiff.models.motion import MotionEncoder

    relu, leaky = MotionEncoder(1, 8, 2), MotionEncoder(1, 8, 2, activation="leaky_relu")
    assert list(relu.state_dict()) == list(leaky.state_dict())
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in leaky.modules()) == 3
    x = -torch.ones(1, 1, 16, 16)
    leaky.load_state_dict(relu.state_dict())
    assert (leaky(x) < 0).any() and not (relu(x) < 0).any()
