"""Exported models: a folder with ``config.json`` and ``model.safetensors``.

``config.json`` records the SHA-256 of ``model.safetensors`` (``"checksums"``), checked on load;
exports written before checksums existed load without the check. An official STDiff folder
(see :mod:`stdiff.official`) is converted on load.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import STDiffConfig
from .fileio import atomic_dir, checksums, resolve_dir, verify_checksums

__all__ = ["save_pretrained", "load_pretrained", "is_pretrained_dir", "FORMAT"]

FORMAT = {"format": "stdiff", "version": 1}
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def is_pretrained_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by :func:`save_pretrained`."""
    p = Path(path)
    return (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def save_pretrained(model: torch.nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model`` (an STDiff) to the folder ``path`` atomically; returns the path.

    ``extra``: JSON-serialisable metadata stored in config.json under "extra" (e.g. training step).
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME))
        config = {**FORMAT, "model": model.config.to_dict(), "extra": extra or {},
                  "checksums": checksums(tmp, [WEIGHTS_NAME])}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return Path(path)


def _read_meta(p: Path) -> dict:
    try:
        meta = json.loads((p / CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(p / CONFIG_NAME)!r} is not a readable JSON config: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT["format"]:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{str(p / CONFIG_NAME)!r} is not an stdiff config (format={found!r})")
    return meta


def load_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Load an exported STDiff folder (or an official STDiff folder, converted); raises
    FileNotFoundError/ValueError with the reason, ValueError on a checksum mismatch."""
    from .models import STDiff
    from .official import is_official_checkpoint, load_official

    p = resolve_dir(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint folder {str(path)!r} does not exist")
    if not is_pretrained_dir(p):
        if p.is_dir() and is_official_checkpoint(p):
            return load_official(p, map_location=map_location)
        raise ValueError(f"{str(p)!r} is not an stdiff checkpoint folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    meta = _read_meta(p)
    if "checksums" in meta:
        verify_checksums(p, meta["checksums"])
    with torch.device("meta"):  # no random initialisation: every tensor is assigned from the file
        model = STDiff(STDiffConfig.from_dict(meta["model"]))
    try:
        state = load_file(str(p / WEIGHTS_NAME), device=str(map_location))
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"{str(p / WEIGHTS_NAME)!r} is not a readable safetensors file: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"weights in {str(p)!r} do not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    return model
