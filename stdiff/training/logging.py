"""Training logs (rank 0 only): progress bar, CSV, TensorBoard when installed, preview GIFs.

Files under ``<out>``: ``logs/train.csv`` (one row per logged step), ``logs/tb/`` (TensorBoard
events) and ``previews/step-XXXXXXX.gif`` (EMA-model predictions next to the ground truth).
"""
from __future__ import annotations

import csv
import io
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..fileio import atomic_write_text

__all__ = ["TrainLogger", "CSV_FIELDS", "save_preview"]

CSV_FIELDS = ("step", "loss", "lr", "grad_norm", "clips_per_s", "elapsed_s")


def _tensorboard_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


class TrainLogger:
    """Progress bar with loss and throughput, CSV rows and TensorBoard scalars.

    ``start_step`` > 0 (resume) drops CSV rows past that step, so the log matches the run.
    """

    def __init__(self, out: Path, total_steps: int, start_step: int, enabled: bool = True,
                 tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.csv_path = out / "logs" / "train.csv"
        self.start_time = time.perf_counter()
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not enabled, desc="train",
                        dynamic_ncols=True, mininterval=1.0)
        self.writer = None
        if not enabled:
            return
        self._rewrite_csv(start_step)
        if tensorboard:
            self.writer = _tensorboard_writer(out / "logs" / "tb")
        self._csv = open(self.csv_path, "a", newline="")
        self._rows = csv.DictWriter(self._csv, fieldnames=CSV_FIELDS)

    def _rewrite_csv(self, start_step: int) -> None:
        kept = []
        if start_step > 0 and self.csv_path.is_file():
            with open(self.csv_path, newline="") as fh:
                kept = [row for row in csv.DictReader(fh) if row.get("step", "").isdigit() and int(row["step"]) <= start_step]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in CSV_FIELDS} for row in kept)
        atomic_write_text(self.csv_path, buf.getvalue())

    def advance(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def log(self, step: int, loss: float, lr: float, grad_norm: float, clips_per_s: float) -> None:
        """Record one logged step in the CSV, TensorBoard and the bar's postfix."""
        if not self.enabled:
            return
        row = dict(step=step, loss=f"{loss:.6f}", lr=f"{lr:.3e}", grad_norm=f"{grad_norm:.4f}",
                   clips_per_s=f"{clips_per_s:.2f}", elapsed_s=f"{time.perf_counter() - self.start_time:.1f}")
        self._rows.writerow(row)
        self._csv.flush()
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/grad_norm", grad_norm, step)
            self.writer.add_scalar("train/clips_per_s", clips_per_s, step)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", clips_s=f"{clips_per_s:.1f}", refresh=False)

    def write(self, message: str) -> None:
        """A message that does not break the progress bar."""
        if self.enabled:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
        if not self.enabled:
            return
        self._csv.close()
        if self.writer is not None:
            self.writer.close()


@torch.no_grad()
def save_preview(model, clips: Tensor, num_observed: int, path: Path, sampler: str, steps: int,
                 seed: int) -> None:
    """Sample the future of ``clips`` (N, T, C, H, W) in [0, 1] and save a GIF next to the truth.

    ``model``: an STDiff (the EMA copy); frames after ``num_observed`` are predicted at their times.
    """
    from ..pipeline import sample
    from ..prediction import Prediction

    device = next(model.parameters()).device
    clips = clips.to(device)
    observed, future = clips[:, :num_observed], clips[:, num_observed:]
    times = [float(num_observed + j) for j in range(future.shape[1])]
    generator = torch.Generator(device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        frames = sample(model, observed, times, 1, sampler, steps, generator=generator).frames
    finally:
        model.train(was_training)
    pred = Prediction(frames=frames.float().cpu(), times=times, observed=observed.float().cpu())
    try:
        pred.save_gif(path, ground_truth=future.float().cpu())
    except (OSError, ValueError) as exc:
        warnings.warn(f"could not write preview {path}: {exc}", RuntimeWarning, stacklevel=2)
