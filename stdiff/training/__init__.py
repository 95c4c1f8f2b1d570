"""Training STDiff: configuration, loop, EMA, resumable checkpoints, DDP, logs (``stdiff train``)."""
from __future__ import annotations

from .config import TrainConfig, apply_overrides, load_yaml
from .ema import EMA, ema_decay
from .loop import TrainResult, build_train_data, cosine_with_warmup, train
from .state import TrainingState, find_latest_valid, list_checkpoints, load_state, save_state

__all__ = [
    "EMA",
    "TrainConfig",
    "TrainResult",
    "TrainingState",
    "apply_overrides",
    "build_train_data",
    "cosine_with_warmup",
    "ema_decay",
    "find_latest_valid",
    "list_checkpoints",
    "load_state",
    "load_yaml",
    "save_state",
    "train",
]
