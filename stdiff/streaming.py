"""Streaming prediction: observed frames arrive one at a time, predictions are asked at any point.

Each pushed frame costs one motion-encoder pass on its difference to the previous frame and one
Conv-GRU step; the whole past is never re-encoded. Predicting from a stream gives the same frames
as :meth:`Predictor.predict` on all frames pushed so far (same seed).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .prediction import Prediction, as_frames, future_times

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["PredictionStream"]


class PredictionStream:
    """Incremental context of N videos for a :class:`~stdiff.Predictor` (from ``predictor.stream()``).

    Frame k pushed is at time k. Keeps the Conv-GRU state and the last ``config.num_observed``
    frames (the context of later chunks of long horizons), nothing else.
    """

    def __init__(self, predictor: Predictor) -> None:
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
        x = as_frames(frame, cfg.channels, cfg.image_size, "frame", rank=4).to(p.device) * 2 - 1
        if self._recent and x.shape[0] != self._recent[-1].shape[0]:
            raise ValueError(f"frame must hold {self._recent[-1].shape[0]} video(s) like the frames pushed before, "
                             f"got shape {tuple(x.shape)}")
        with p.context_mode():
            if self._recent:
                model = p.model
                features = model.motion_encoder(x - self._recent[-1])
                gx, cx = model.conv_gru.input_projections(features)
                self._state = model.conv_gru.step(gx, cx, self._state)
        self._recent.append(x)
        self._count += 1
        return self

    def predict(self, times: Sequence[float] | None = None, num_frames: int | None = None, fps: float = 1,
                **kwargs) -> Prediction:
        """Predict from the frames pushed so far; arguments as :meth:`Predictor.predict` (times are
        after the last pushed frame's time ``num_frames - 1``). ``Prediction.observed`` holds the
        last ``config.num_observed`` pushed frames."""
        if self._count < 2:
            raise ValueError(f"push at least 2 frames before predicting (the motion encoder reads frame "
                             f"differences), got {self._count}")
        t_last = float(self._count - 1)
        query = future_times(times, num_frames, fps, t_last, self.predictor.config.num_future)
        context = torch.stack(list(self._recent), 1)
        observed = ((context + 1) / 2).float().cpu()
        defaults = dict(num_samples=1, sampler="ddpm", steps=None, seed=None, generator=None,
                        return_motion=False, progress=True)
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}")
        args = {**defaults, **kwargs}
        return self.predictor._predict(context, self._state, t_last, query, observed, args["num_samples"],
                                       args["sampler"], args["steps"], args["seed"], args["generator"],
                                       args["return_motion"], args["progress"])
