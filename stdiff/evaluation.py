"""Streaming evaluation of video predictions over a test set, resumable, with a JSON/CSV/PNG report.

Feed ``Evaluator.update`` one batch at a time: predictions (N, S, T, C, H, W) and ground truth
(N, T, C, H, W), both in [0, 1]. Per frame it accumulates, for PSNR, SSIM and LPIPS:
- ``mean_over_samples``: per video, the metric averaged over the S samples;
- ``best_of_samples``: per video, the single sample whose metric averaged over all T frames is best
  (an oracle choice made with the ground truth, the usual best-of-S convention), frame by frame;
both averaged over videos, plus inter-sample LPIPS (mean over sample pairs, diversity) and FVD
(all samples pooled, each sample index separately, and the best index). Every predicted frame
given is scored. State is a JSON file (``save_state``/``load_state``): finished batches are
recorded by id, so an interrupted run resumes without redoing them.

``protocol="official"`` scores predictions made under the official STDiff protocol
(``stdiff.official_protocol.predict_official``: the first frame chosen among candidates with the
ground truth, all S trajectories continued from it) with the official SSIM (``ssim(official=True)``);
its best_of_samples is the official best-of-S. That uses the ground truth, and the report says so.
The default protocol uses scikit-image's SSIM (valid region); the report names the variant.
``settings``: a JSON-safe description of how the predictions were made (checkpoint, sampler,
seed, data...); it is saved in the state and the report, and a state made with other settings is
refused, so a resumed run never mixes two runs.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .metrics import psnr, ssim
from .metrics._validate import unit_images
from .metrics.accumulate import FeatureStats, decode_array, encode_array
from .metrics.diversity import inter_sample_lpips
from .metrics.frechet import frechet_distance
from .metrics.fvd import VideoFeatures
from .metrics.report import atomic_write, write_report

PROTOCOLS = ("honest", "official")
_STATE_FORMAT = "stdiff-evaluation-state-v1"
_HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False}

Distance = Callable[[Tensor, Tensor], Tensor]
"""(..., C, H, W) image pairs in [0, 1] -> (...,) distances, e.g. ``stdiff.metrics.LPIPS``."""


def _check_times(times: Sequence[float]) -> list[float]:
    try:
        out = [float(t) for t in times]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"times must be a sequence of numbers, got {times!r}") from exc
    if not out or not all(math.isfinite(t) for t in out) or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"times must be a non-empty, finite, strictly increasing sequence, got {out}")
    return out


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """``"key: saved -> now"`` for each differing entry, nested dicts flattened as ``a.b``."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


class Evaluator:
    """Accumulates metrics batch by batch; see the module docstring for what is reported.

    times: the T prediction times (frame units) of every batch, strictly increasing.
    lpips: an ``LPIPS`` module (``stdiff.metrics.load_lpips``) or None to skip LPIPS and diversity.
    video_features: (N, T, C, H, W) in [0, 1] -> (N, D) features (e.g. ``stdiff.metrics.load_i3d``),
        or None to skip FVD.
    protocol: "honest" (default) or "official" (predictions from the official, ground-truth-assisted
        protocol; scored with the official SSIM).
    device: where metrics are computed (None: the predictions' device); an LPIPS module is moved there.
    settings: JSON-safe dict describing the run (see the module docstring), or None.
    """

    def __init__(self, times: Sequence[float], *, lpips: Distance | None = None,
                 video_features: VideoFeatures | None = None, protocol: str = "honest",
                 device: torch.device | str | None = None, settings: dict[str, Any] | None = None) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if settings is not None and not isinstance(settings, dict):
            raise TypeError(f"settings must be a dict or None, got {type(settings).__name__}")
        try:
            self.settings = json.loads(json.dumps(settings, allow_nan=False)) if settings is not None else None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"settings must be JSON-safe (str, numbers, lists, dicts): {exc}") from exc
        for name, fn in (("lpips", lpips), ("video_features", video_features)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        self.times = _check_times(times)
        self.protocol = protocol
        self.device = None if device is None else torch.device(device)
        self.lpips = lpips.to(self.device) if isinstance(lpips, nn.Module) and self.device is not None else lpips
        self.video_features = video_features
        self.frame_metrics = ["psnr", "ssim"] + (["lpips"] if lpips is not None else [])
        self._reset()

    def _reset(self) -> None:
        t = len(self.times)
        self.num_videos = 0
        self.num_samples: int | None = None
        self.batches_done: list[str] = []
        self._sums = {f"{m}/{s}": np.zeros(t) for m in self.frame_metrics
                      for s in ("mean_over_samples", "best_of_samples")}
        self._sums["inter_sample_lpips/mean_over_pairs"] = np.zeros(t)
        self._fvd_real = FeatureStats()
        self._fvd_all = FeatureStats()
        self._fvd_per_sample: list[FeatureStats] = []

    @property
    def uses_ground_truth(self) -> bool:
        """True when the predictions were made with the ground truth (official protocol)."""
        return self.protocol == "official"

    def is_done(self, batch_id: int | str) -> bool:
        """Whether the batch with this id has already been accumulated."""
        return str(batch_id) in self.batches_done

    @torch.no_grad()
    def update(self, predictions: Tensor, ground_truth: Tensor, *, batch_id: int | str,
               observed: Tensor | None = None) -> None:
        """Accumulate one batch.

        predictions: (N, S, T, C, H, W) in [0, 1], S the same for every batch.
        ground_truth: (N, T, C, H, W) in [0, 1], frames at the same ``times``.
        batch_id: a unique id of the batch (e.g. its index in the loader); a repeated id is an error.
        observed: optional (N, To, C, H, W) observed frames in [0, 1], prepended to real and predicted
            videos for FVD (as the official evaluation does); metrics per frame never include them.
        """
        if self.is_done(batch_id):
            raise ValueError(f"batch_id {batch_id!r} was already accumulated (check is_done() when resuming)")
        pred, gt, obs = self._check_batch(predictions, ground_truth, observed)
        n, s = pred.shape[:2]
        if self.num_samples is not None and s != self.num_samples:
            raise ValueError(f"predictions must have S={self.num_samples} samples like earlier batches, got {s}")
        sums = self._frame_sums(pred, gt)
        feats = self._features(pred, gt, obs) if self.video_features is not None else None

        # Everything is computed: commit.
        for key, value in sums.items():
            self._sums[key] += value
        if feats is not None:
            real, fake = feats
            if not self._fvd_per_sample:
                self._fvd_per_sample = [FeatureStats() for _ in range(s)]
            self._fvd_real.update(real)
            self._fvd_all.update(fake.reshape(n * s, -1))
            for k, stats in enumerate(self._fvd_per_sample):
                stats.update(fake[:, k])
        self.num_samples = s
        self.num_videos += n
        self.batches_done.append(str(batch_id))

    def _check_batch(self, predictions: Tensor, ground_truth: Tensor,
                     observed: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        pred = unit_images("predictions", predictions, "(N, S, T, C, H, W)", ndim=6)
        gt = unit_images("ground_truth", ground_truth, "(N, T, C, H, W)", ndim=5)
        if pred.shape[:1] + pred.shape[2:] != gt.shape:
            raise ValueError(f"predictions (N, S, T, C, H, W) = {tuple(pred.shape)} and ground_truth "
                             f"(N, T, C, H, W) = {tuple(gt.shape)} must agree in N, T, C, H, W")
        if gt.shape[1] != len(self.times):
            raise ValueError(f"ground_truth must have T={len(self.times)} frames (one per time), got {gt.shape[1]}")
        device = self.device if self.device is not None else pred.device
        obs = None
        if observed is not None:
            obs = unit_images("observed", observed, "(N, To, C, H, W)", ndim=5)
            if obs.shape[0] != gt.shape[0] or obs.shape[2:] != gt.shape[2:]:
                raise ValueError(f"observed must have shape (N, To, C, H, W) = ({gt.shape[0]}, To, "
                                 f"{', '.join(map(str, gt.shape[2:]))}), got {tuple(obs.shape)}")
            obs = obs.to(device)
        return pred.to(device), gt.to(device), obs

    def _frame_sums(self, pred: Tensor, gt: Tensor) -> dict[str, np.ndarray]:
        """Per-frame sums over the batch's videos, (T,) float64 each."""
        target = gt.unsqueeze(1).expand_as(pred)
        official = self.protocol == "official"
        fns = {"psnr": psnr, "ssim": lambda x, y: ssim(x, y, official=official), "lpips": self.lpips}
        n = pred.shape[0]
        out = {}
        for m in self.frame_metrics:
            values = fns[m](pred, target).double()  # (N, S, T)
            per_video = values.mean(dim=2)  # (N, S)
            best = per_video.argmax(dim=1) if _HIGHER_IS_BETTER[m] else per_video.argmin(dim=1)
            out[f"{m}/mean_over_samples"] = values.mean(dim=1).sum(dim=0).cpu().numpy()
            out[f"{m}/best_of_samples"] = values[torch.arange(n, device=values.device), best].sum(dim=0).cpu().numpy()
        if self.lpips is not None and pred.shape[1] >= 2:
            out["inter_sample_lpips/mean_over_pairs"] = (
                inter_sample_lpips(pred, self.lpips, dim=1).double().sum(dim=0).cpu().numpy())
        return out

    def _features(self, pred: Tensor, gt: Tensor, obs: Tensor | None) -> tuple[Tensor, Tensor]:
        """FVD features: real (N, D) and predicted (N, S, D)."""
        n, s = pred.shape[:2]
        fake = pred.flatten(0, 1)
        real = gt
        if obs is not None:
            real = torch.cat([obs, gt], dim=1)
            fake = torch.cat([obs.repeat_interleave(s, dim=0), fake], dim=1)
        real_f = self.video_features(real)
        fake_f = self.video_features(fake)
        d = self._fvd_real.dim
        for name, f, rows in (("real", real_f, n), ("predicted", fake_f, n * s)):
            if not isinstance(f, Tensor) or f.dim() != 2 or f.shape[0] != rows:
                shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise ValueError(f"video_features must return ({rows}, D) features for the {name} videos, got {shape}")
            d = f.shape[1] if d is None else d
            if f.shape[1] != d:
                raise ValueError(f"video_features must return D={d} features like before, got {f.shape[1]}")
            if not bool(torch.isfinite(f).all()):
                raise ValueError(f"video_features returned non-finite features for the {name} videos")
        return real_f, fake_f.reshape(n, s, -1)

    def results(self) -> dict[str, Any]:
        """The report: configuration, per-frame curves and averages, FVD, and what was skipped and why."""
        if self.num_videos == 0:
            raise ValueError("no batch has been accumulated yet")
        metrics: dict[str, Any] = {}
        for m in self.frame_metrics:
            metrics[m] = {"higher_is_better": _HIGHER_IS_BETTER[m], "statistics": {
                s: self._curve(f"{m}/{s}") for s in ("mean_over_samples", "best_of_samples")}}
        skipped = {}
        if self.lpips is None:
            skipped["lpips"] = skipped["inter_sample_lpips"] = "no LPIPS module was given"
        elif self.num_samples < 2:
            skipped["inter_sample_lpips"] = "needs at least 2 samples per video"
        else:
            metrics["inter_sample_lpips"] = {"higher_is_better": None, "statistics": {
                "mean_over_pairs": self._curve("inter_sample_lpips/mean_over_pairs")}}
        if self.video_features is None:
            skipped["fvd"] = "no video feature extractor (I3D) was given"
        elif self.num_videos < 2:
            skipped["fvd"] = "needs at least 2 videos"
        else:
            metrics["fvd"] = {"higher_is_better": False, "statistics": self._fvd()}
        return {
            "protocol": self.protocol,
            "uses_ground_truth": self.uses_ground_truth,
            "note": self._note(),
            "ssim": self.ssim_variant,
            "settings": self.settings,
            "num_videos": self.num_videos,
            "num_samples": self.num_samples,
            "num_batches": len(self.batches_done),
            "times": list(self.times),
            "metrics": metrics,
            "skipped": skipped,
        }

    def _curve(self, key: str) -> dict[str, Any]:
        per_frame = self._sums[key] / self.num_videos
        return {"per_frame": per_frame.tolist(), "average": float(per_frame.mean())}

    def _fvd(self) -> dict[str, Any]:
        real_mu, real_cov = self._fvd_real.mean(), self._fvd_real.cov()

        def dist(stats: FeatureStats) -> float:
            return frechet_distance(stats.mean(), stats.cov(), real_mu, real_cov)

        per_sample = [dist(stats) for stats in self._fvd_per_sample]
        out = {"all_samples": {"value": dist(self._fvd_all)},
               "best_sample_index": {"value": min(per_sample)},
               "mean_sample_index": {"value": float(np.mean(per_sample))}}
        out.update({f"sample_{k}": {"value": v} for k, v in enumerate(per_sample)})
        return out

    @property
    def ssim_variant(self) -> str:
        """Which SSIM the report uses."""
        if self.protocol == "official":
            return "official: zero-padded, same-size map averaged (the official STDiff SSIM)"
        return "scikit-image: valid region only (structural_similarity, gaussian_weights, sigma 1.5)"

    def _note(self) -> str:
        note = ("mean_over_samples: per video, the metric averaged over its samples. best_of_samples: per "
                "video, the sample with the best metric averaged over all frames (an oracle choice using the "
                "ground truth). FVD all_samples pools every sample; sample_k uses the k-th sample of each video.")
        if self.uses_ground_truth:
            note = ("OFFICIAL PROTOCOL, USES GROUND TRUTH: for each video, the first predicted frame was "
                    "chosen among candidates as the one closest to the ground truth (PSNR + SSIM) and every "
                    "sample continues from it, so every number here, including mean_over_samples, benefits "
                    "from the ground truth; best_of_samples is the official best-of-S. " + note)
        return note

    def write_report(self, out_dir: str | Path, stem: str = "metrics") -> dict[str, Path]:
        """Write ``<stem>.json``, ``<stem>.csv``, ``<stem>.png`` atomically in ``out_dir``; returns the paths."""
        return write_report(self.results(), out_dir, stem)

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe, exact state (the configuration, sums, FVD statistics and finished batch ids)."""
        return {
            "format": _STATE_FORMAT,
            "config": self._config(),
            "num_videos": self.num_videos,
            "num_samples": self.num_samples,
            "batches_done": list(self.batches_done),
            "sums": {k: encode_array(v) for k, v in self._sums.items()},
            "fvd_real": self._fvd_real.state_dict(),
            "fvd_all": self._fvd_all.state_dict(),
            "fvd_per_sample": [s.state_dict() for s in self._fvd_per_sample],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; its configuration must match this evaluator's."""
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not an evaluation state (expected format {_STATE_FORMAT!r})")
        if state.get("config") != self._config():
            saved = state.get("config") if isinstance(state.get("config"), dict) else {}
            raise ValueError("the evaluation state was saved with a different configuration: "
                             + "; ".join(_differences(saved, self._config())))
        sums = {k: decode_array(v) for k, v in state["sums"].items()}
        if set(sums) != set(self._sums) or any(v.shape != (len(self.times),) for v in sums.values()):
            raise ValueError("the evaluation state's per-frame sums do not match this evaluator")
        self._sums = sums
        self.num_videos = int(state["num_videos"])
        self.num_samples = state["num_samples"]
        self.batches_done = [str(b) for b in state["batches_done"]]
        self._fvd_real = FeatureStats.from_state_dict(state["fvd_real"])
        self._fvd_all = FeatureStats.from_state_dict(state["fvd_all"])
        self._fvd_per_sample = [FeatureStats.from_state_dict(s) for s in state["fvd_per_sample"]]

    def save_state(self, path: str | Path) -> Path:
        """Write the state as JSON, atomically."""
        return atomic_write(path, json.dumps(self.state_dict(), allow_nan=False).encode())

    def load_state(self, path: str | Path) -> None:
        """Restore the state written by ``save_state``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation state file not found: {path}")
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"evaluation state file {path} is not valid JSON: {exc}") from exc
        self.load_state_dict(state)

    def _config(self) -> dict[str, Any]:
        return {"times": list(self.times), "protocol": self.protocol, "frame_metrics": list(self.frame_metrics),
                "fvd": self.video_features is not None, "settings": self.settings}
