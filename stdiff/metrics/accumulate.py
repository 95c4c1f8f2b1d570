"""Streaming statistics in float64 that can be saved to and restored from JSON exactly."""
from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike


def encode_array(arr: np.ndarray) -> dict[str, Any]:
    """A float64 array as a JSON-safe dict (little-endian bytes, base64): exact round trip."""
    a = np.ascontiguousarray(arr, dtype="<f8")
    return {"shape": list(a.shape), "float64_base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj: dict[str, Any]) -> np.ndarray:
    """Inverse of ``encode_array``."""
    try:
        data = base64.b64decode(obj["float64_base64"])
        return np.frombuffer(data, dtype="<f8").reshape(obj["shape"]).astype(np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an encoded float64 array: {exc}") from exc


class FeatureStats:
    """Running mean and covariance of feature vectors, without keeping the vectors.

    Each batch's mean and centred scatter matrix are computed in float64 and merged with the
    running ones (Chan et al.'s pairwise update), which avoids the cancellation of raw
    ``sum(x x^T) - n mu mu^T`` when features have a large mean. ``cov()`` is the unbiased
    (n - 1) estimate, as ``np.cov`` in the StyleGAN-V / STDiff FVD code.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None
        self._scatter: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        """Feature dimension D, None before the first update."""
        return None if self._mean is None else self._mean.shape[0]

    def update(self, features: ArrayLike | torch.Tensor) -> None:
        """Add a batch of feature vectors, shape (N, D), N >= 1, finite."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().double().numpy()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"features must have shape (N, D) with N >= 1, got {x.shape}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ValueError(f"features must have D={self.dim} columns like earlier batches, got {x.shape[1]}")
        if not np.all(np.isfinite(x)):
            raise ValueError("features must be finite (no NaN/inf)")
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        scatter_b = centred.T @ centred
        if self._mean is None:
            self.count, self._mean, self._scatter = n_b, mean_b, scatter_b
            return
        n = self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._scatter = self._scatter + scatter_b + np.outer(delta, delta) * (self.count * n_b / n)
        self.count = n

    def mean(self) -> np.ndarray:
        """(D,) mean; needs at least one vector."""
        if self._mean is None:
            raise ValueError("no features were added")
        return self._mean.copy()

    def cov(self) -> np.ndarray:
        """(D, D) unbiased covariance; needs at least two vectors."""
        if self._scatter is None or self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        return self._scatter / (self.count - 1)

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state (exact)."""
        if self._mean is None:
            return {"count": 0}
        return {"count": self.count, "mean": encode_array(self._mean), "scatter": encode_array(self._scatter)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FeatureStats:
        """Inverse of ``state_dict``."""
        stats = cls()
        count = state.get("count") if isinstance(state, dict) else None
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"bad FeatureStats state: count must be an int >= 0, got {count!r}")
        if count:
            stats.count = count
            stats._mean = decode_array(state["mean"])
            stats._scatter = decode_array(state["scatter"])
            d = stats._mean.shape
            if stats._mean.ndim != 1 or stats._scatter.shape != d + d:
                raise ValueError("bad FeatureStats state: mean (D,) and scatter (D, D) do not match")
        return stats
