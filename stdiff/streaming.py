"""Streaming prediction: observed frames arrive one at a time, predictions are asked at any point.

Each pushed frame costs one motion-encoder pass on its difference to the previous frame and one
Conv-GRU step (:func:`stdiff.pipeline.encode_context` of ``[previous, new]`` from the state); the
whole past is never re-encoded. Predicting from a stream (``Predictor.predict(..., motion_state=, t_last=)``) gives the
same frames as :meth:`Predictor.predict` on all frames pushed so far (same seed).
"""
from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from .config import STDiffConfig
from .models import STDiff
from .pipeline import encode_context
from .prediction import Prediction, as_frames

__all__ = ["PredictionStream"]


class _Predicts(Protocol):
    """What a stream needs of its :class:`~stdiff.Predictor`."""

    model: STDiff

    @property
    def config(self) -> STDiffConfig: ...

    @property
    def device(self) -> torch.device: ...

    def predict(self, frames: object, *args: Any, **kwargs: Any) -> Prediction: ...

    def _running(self) -> contextlib.AbstractContextManager: ...


class PredictionStream:
    """Incremental context of N videos for a :class:`~stdiff.Predictor` (from ``predictor.stream()``).

    Frame k pushed is at time k. Keeps the Conv-GRU state and the last ``config.num_observed``
    frames (the context of later chunks of long horizons), nothing else. Any number of streams may
    share one Predictor (also across threads); one stream is used by one thread at a time.
    """

    def __init__(self, predictor: _Predicts) -> None:
        self.predictor = predictor
        self._recent: deque[Tensor] = deque(maxlen=max(2, predictor.config.num_observed))
        self._state: Tensor | None = None
        self._count = 0

    @property
    def num_frames(self) -> int:
        """Frames pushed so far."""
        return self._count

    @property
    def state(self) -> Tensor | None:
        """Conv-GRU motion state (N, F, h, w) after the last pushed frame (None before the second)."""
        return self._state

    def reset(self) -> None:
        """Forget all pushed frames."""
        self._recent.clear()
        self._state = None
        self._count = 0

    def push(self, frame: object) -> PredictionStream:
        """Add the next observed frame: (N, C, H, W) or (C, H, W), float in [0, 1] or uint8. Returns self."""
        p = self.predictor
        cfg = p.config
        with p._running():
            x = as_frames(frame, cfg.channels, cfg.image_size, "frame", rank=4, device=p.device)
            if self._recent and x.shape[0] != self._recent[-1].shape[0]:
                raise ValueError(f"frame must hold {self._recent[-1].shape[0]} video(s) like the frames pushed "
                                 f"before, got shape {tuple(x.shape)}")
            if self._recent:
                with torch.inference_mode():
                    self._state = encode_context(p.model, torch.stack([self._recent[-1].to(x.device), x], 1),
                                                 self._state)
        self._recent.append(x)
        self._count += 1
        return self

    def predict(self, times: Sequence[float] | None = None, num_frames: int | None = None, fps: float = 1,
                **kwargs: Any) -> Prediction:
        """Predict from the frames pushed so far; arguments as :meth:`Predictor.predict` (times are
        after the last pushed frame's time ``num_frames - 1``). ``Prediction.observed`` holds the
        last ``config.num_observed`` pushed frames."""
        if self._count < 2:
            raise ValueError(f"push at least 2 frames before predicting (the motion encoder reads frame "
                             f"differences), got {self._count}")
        return self.predictor.predict(torch.stack(list(self._recent), 1), times, num_frames, fps,
                                      motion_state=self._state, t_last=float(self._count - 1), **kwargs)
