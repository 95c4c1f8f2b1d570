"""Frechet distance between two Gaussians, in float64, with an eigen-decomposition square root.

``d = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))``. The trace of the square root is
computed as ``sum(sqrt(eig(R S2 R)))`` with ``R = sqrt(S1)``: ``R S2 R`` is symmetric positive
semi-definite and has the eigenvalues of ``S1 S2``, so both factorisations are symmetric
eigen-decompositions, with eigenvalues within round-off of 0 set to 0. This stays finite and accurate for
singular or near-singular covariances (fewer samples than feature dimensions), where a general
``sqrtm(S1 @ S2)`` can return complex values or lose precision.
"""
from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike


def _as_array(name: str, value: ArrayLike | torch.Tensor, ndim: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN/inf)")
    return arr


def _sqrt_eigenvalues(vals: np.ndarray) -> np.ndarray:
    """Square roots of PSD eigenvalues; those within round-off of 0 (|v| <= D eps max(v)) count as 0."""
    tol = max(float(vals.max(initial=0.0)), 0.0) * vals.size * np.finfo(np.float64).eps
    return np.sqrt(np.where(vals > tol, vals, 0.0))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix."""
    vals, vecs = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vecs * _sqrt_eigenvalues(vals)) @ vecs.T


def trace_sqrt_product(sigma1: ArrayLike, sigma2: ArrayLike) -> float:
    """``tr(sqrt(sigma1 @ sigma2))`` for symmetric PSD (D, D) matrices, in float64."""
    s1 = _as_array("sigma1", sigma1, 2)
    s2 = _as_array("sigma2", sigma2, 2)
    root = _psd_sqrt(s1)
    inner = root @ s2 @ root
    vals = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(_sqrt_eigenvalues(vals).sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu1, mu2: (D,); sigma1, sigma2: (D, D) symmetric PSD covariances (numpy arrays or tensors).
    Returns a float >= 0 (tiny negative round-off clipped to 0).
    """
    m1 = _as_array("mu1", mu1, 1)
    m2 = _as_array("mu2", mu2, 1)
    s1 = _as_array("sigma1", sigma1, 2)
    s2 = _as_array("sigma2", sigma2, 2)
    d = m1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}) to match the means, got {s.shape}")
    if m2.shape != (d,):
        raise ValueError(f"mu2 must have shape ({d},) like mu1, got {m2.shape}")
    dist = np.square(m1 - m2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return max(float(dist), 0.0)
