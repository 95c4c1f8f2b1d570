"""Training-state checkpoints for exact resume: ``<out>/checkpoints/step-XXXXXXX/``.

Each checkpoint folder holds ``model.safetensors`` (raw weights), ``ema.safetensors`` (EMA
weights), ``optimizer.pt`` (AdamW state), ``trainer.pt`` (LR scheduler, EMA counter, RNG
states of every rank) and ``state.json`` (step, world size, model and training configs, and the
SHA-256 of every other file). The folder is written under a temporary name and renamed into
place, so a crash while saving leaves either the complete new folder or nothing. Loading
verifies the checksums and reads every file; on resume a corrupt checkpoint is skipped with a
warning in favour of the previous one, and when every checkpoint is corrupt resuming stops
with an error naming them. Pruning never deletes checkpoints newer than the one just written.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..fileio import atomic_dir, checksums, verify_checksums

__all__ = ["TrainingState", "save_state", "load_state", "list_checkpoints", "find_latest_valid",
           "prune_checkpoints", "remove_partial", "capture_rng", "restore_rng", "checkpoint_name"]

FORMAT = {"format": "stdiff-train-state", "version": 1}
_NAME = re.compile(r"^step-(\d{7,})$")
_FILES = ("model.safetensors", "ema.safetensors", "optimizer.pt", "trainer.pt")
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError,
                SafetensorError)


@dataclass
class TrainingState:
    """Everything needed to continue training exactly where it stopped (tensors on CPU)."""

    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    ema_updates: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]]  # one entry per rank, see capture_rng
    meta: dict[str, Any] = field(default_factory=dict)  # world_size, model_config, train_config
    path: Path | None = None


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def capture_rng(loss_generator: torch.Generator) -> dict[str, Any]:
    """This process's RNG states: torch CPU/CUDA, Python, NumPy and the loss generator."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {"key": np_state[1].astype(np.int64).tolist(), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "loss_generator": loss_generator.get_state(),
    }


def restore_rng(rng: dict[str, Any], loss_generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the device count matches)."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(rng["python"])
    n = rng["numpy"]
    np.random.set_state(("MT19937", np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    loss_generator.set_state(rng["loss_generator"])


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_state(root: str | os.PathLike, state: TrainingState) -> Path:
    """Write ``state`` to ``root/step-XXXXXXX`` atomically; returns the folder."""
    final = Path(root) / checkpoint_name(state.step)
    with atomic_dir(final) as tmp:
        save_file(_cpu(state.model), str(tmp / "model.safetensors"))
        save_file(_cpu(state.ema), str(tmp / "ema.safetensors"))
        torch.save(state.optimizer, tmp / "optimizer.pt")
        torch.save({"scheduler": state.scheduler, "ema_updates": state.ema_updates, "rng": state.rng},
                   tmp / "trainer.pt")
        meta = {**FORMAT, "step": state.step, **state.meta, "checksums": checksums(tmp, _FILES)}
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
        for name in (*_FILES, "state.json"):
            _fsync(tmp / name)
    return final


def load_state(path: str | os.PathLike) -> TrainingState:
    """Read a checkpoint folder (tensors on CPU); raises ValueError/FileNotFoundError if unusable."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(p)!r} does not exist")
    try:
        meta = json.loads((p / "state.json").read_text())
        if meta.get("format") != FORMAT["format"]:
            raise ValueError(f"state.json format is {meta.get('format')!r}, expected {FORMAT['format']!r}")
        if meta.get("version") != FORMAT["version"] or isinstance(meta.get("version"), bool):
            raise ValueError(f"state.json has format version {meta.get('version')!r}; this stdiff reads version "
                             f"{FORMAT['version']}")
        if "checksums" in meta:  # checkpoints written before checksums were recorded load unchecked
            verify_checksums(p, meta["checksums"])
        trainer = torch.load(p / "trainer.pt", map_location="cpu", weights_only=True)
        state = TrainingState(
            step=int(meta["step"]),
            model=load_file(str(p / "model.safetensors")),
            ema=load_file(str(p / "ema.safetensors")),
            ema_updates=int(trainer["ema_updates"]),
            optimizer=torch.load(p / "optimizer.pt", map_location="cpu", weights_only=True),
            scheduler=trainer["scheduler"],
            rng=list(trainer["rng"]),
            meta={k: v for k, v in meta.items() if k not in ("format", "version", "step", "checksums")},
            path=p,
        )
    except _LOAD_ERRORS as exc:
        raise ValueError(f"checkpoint {str(p)!r} is unreadable or incomplete: {type(exc).__name__}: {exc}") from exc
    if set(state.model) != set(state.ema):
        raise ValueError(f"checkpoint {str(p)!r}: model and EMA weights have different keys")
    return state


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Checkpoint folders under ``root``, oldest step first."""
    r = Path(root)
    if not r.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in r.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def find_latest_valid(root: str | os.PathLike) -> TrainingState | None:
    """The newest loadable checkpoint under ``root`` (warning about each corrupt newer one), or None
    when there is no checkpoint. Raises ValueError naming them when every checkpoint is corrupt."""
    corrupt = []
    for path in reversed(list_checkpoints(root)):
        try:
            return load_state(path)
        except ValueError as exc:
            corrupt.append(path.name)
            warnings.warn(f"skipping corrupt checkpoint: {exc}", RuntimeWarning, stacklevel=2)
    if corrupt:
        raise ValueError(f"every checkpoint in {str(root)!r} is corrupt ({', '.join(reversed(corrupt))}): "
                         "nothing to resume from; move them away to start afresh")
    return None


def prune_checkpoints(root: str | os.PathLike, keep_last: int, upto: int | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints at steps <= ``upto`` (all when None);
    returns the deleted folders. Newer ones (left by an earlier run, skipped as corrupt on
    resume) are kept, so the checkpoint just written is never deleted."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    listed = list_checkpoints(root)
    if upto is not None:
        listed = [p for p in listed if int(_NAME.match(p.name).group(1)) <= upto]
    old = listed[:-keep_last]
    for path in old:
        doomed = path.with_name(f".{path.name}.deleting")
        os.replace(path, doomed)  # out of the listing at once, even if rmtree is interrupted
        shutil.rmtree(doomed, ignore_errors=True)
    return old


def remove_partial(root: str | os.PathLike) -> list[Path]:
    """Delete temporary folders left by a process killed while saving or pruning; returns them."""
    r = Path(root)
    if not r.is_dir():
        return []
    partial = [p for p in r.iterdir() if p.is_dir() and p.name.startswith(".step-")]
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial
