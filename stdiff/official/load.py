"""Find, read and load checkpoints of the official STDiff code (XiYe20/STDiffProject).

Accepted sources:
- an exported pipeline folder (``model_index.json``, ``stdiff/``, ``scheduler/``), as written by the
  official training script and read by its test script;
- a model folder: ``stdiff/`` of a pipeline, or ``unet_ema/`` / ``unet/`` of an accelerate training
  checkpoint (``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``); a folder holding
  several of these sub-folders resolves to the first of ``stdiff/``, ``unet_ema/``, ``unet/``;
- a raw state dict file (``.safetensors``, ``.bin``, ``.pt``, ``.pth``), with the official
  ``config.json`` beside it, or with a config given by the caller (e.g. a preset).

Pickle-based files are read with ``torch.load(weights_only=True)`` (tensors and plain containers
only); files that need full unpickling, which can run arbitrary code, are refused unless the
caller passes ``trust_pickle=True``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from ..config import STDiffConfig
from ..models import STDiff
from .config import CLIP_FIELDS, architecture_differences, config_from_official
from .keys import PREFIXES, ours_to_official, state_official_to_ours

__all__ = ["OfficialFiles", "is_official_checkpoint", "locate_official", "resolve_config", "read_state_dict",
           "model_from_official_state", "load_official"]

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
MODEL_SUBFOLDERS = ("stdiff", "unet_ema", "unet")
STATE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SHOWN = 20  # names listed per category in key reports


@dataclass(frozen=True)
class OfficialFiles:
    """The files of one official model: weights, its config.json (or None) and the scheduler config (or None)."""

    weights: Path
    config: Path | None
    scheduler_config: Path | None


def _official_config_in(folder: Path) -> Path | None:
    """``folder/config.json`` when it is an STDiffDiffusers config (has unet_cfg and tde_cfg), else None."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return path if isinstance(data, dict) and "unet_cfg" in data and "tde_cfg" in data else None


def _weights_in(folder: Path) -> Path | None:
    return next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)


def _files_for(weights: Path) -> OfficialFiles:
    """The model's config.json beside the weights and, for a pipeline's stdiff/, ../scheduler/scheduler_config.json."""
    config = _official_config_in(weights.parent)
    scheduler = weights.parent.parent / "scheduler" / "scheduler_config.json"
    return OfficialFiles(weights, config, scheduler if config is not None and scheduler.is_file() else None)


def locate_official(path: str | os.PathLike) -> OfficialFiles:
    """Resolve a pipeline folder, model folder or raw state dict file to its files.

    Raises FileNotFoundError when ``path`` does not exist and ValueError when it holds no official
    weights (naming what was looked for).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"official checkpoint {str(p)!r} does not exist")
    if p.is_file():
        if p.suffix not in STATE_SUFFIXES:
            raise ValueError(f"{str(p)!r}: a raw state dict must end in one of {STATE_SUFFIXES}")
        return _files_for(p)
    for folder in (p, *(p / s for s in MODEL_SUBFOLDERS)):
        weights = _weights_in(folder)
        if weights is not None:
            return _files_for(weights)
    raise ValueError(f"{str(p)!r} is not an official STDiff checkpoint: no {' or '.join(WEIGHT_NAMES)} in it "
                     f"or in a sub-folder {', '.join(s + '/' for s in MODEL_SUBFOLDERS)}")


def is_official_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like an official STDiff checkpoint (see the module docstring).

    Folders are recognised by their official weight file names; ``.safetensors`` files by their
    parameter names. Pickle-based files (``.bin``, ``.pt``, ``.pth``) cannot be inspected without
    reading them, so any such file counts: :func:`load_official` then reports precisely what is
    wrong with it. Never raises for a missing or unrelated path (returns False).
    """
    try:
        files = locate_official(path)
    except (FileNotFoundError, ValueError):
        return False
    if files.weights.suffix != ".safetensors":
        return True
    try:
        with safe_open(str(files.weights), framework="pt") as fh:
            keys = list(fh.keys())
    except (OSError, SafetensorError):
        return False
    prefixes = tuple(official for official, _ in PREFIXES)
    return any(k.startswith(prefixes) for k in keys)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {str(path)!r} as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def resolve_config(files: OfficialFiles, config: STDiffConfig | None = None) -> STDiffConfig:
    """The STDiffConfig of an official model.

    With an official config.json it is derived from it (and the scheduler config); ``config``, if
    given, must then describe the same model and supplies the clip lengths. Without config.json
    (a bare state dict) ``config`` is required. Raises ValueError explaining what is missing or
    which fields differ.
    """
    if config is not None and not isinstance(config, STDiffConfig):
        raise TypeError(f"config must be an STDiffConfig or None, got {type(config).__name__}")
    if files.config is None:
        if config is None:
            raise ValueError(f"no official config.json next to {str(files.weights)!r}: give the model's config "
                             "(stdiff convert-official --preset NAME)")
        return config.validate()
    scheduler = _read_json(files.scheduler_config) if files.scheduler_config is not None else None
    official = config_from_official(_read_json(files.config), scheduler)
    if config is None:
        return official
    diffs = architecture_differences(official, config)
    if diffs:
        raise ValueError(f"the given config describes another model than {str(files.config)!r}: "
                         f"fields {diffs} differ")
    return dataclasses.replace(official, **{f: getattr(config, f) for f in CLIP_FIELDS}).validate()


def read_state_dict(weights: str | os.PathLike, trust_pickle: bool = False) -> dict[str, Tensor]:
    """Read a state dict (name -> tensor) onto the CPU from .safetensors or a torch pickle.

    Pickles are read with ``weights_only=True`` unless ``trust_pickle``; a valid pickle that needs
    more raises ValueError telling the user to pass ``--trust-pickle`` only for a trusted source.
    A file that is neither a readable safetensors file nor a torch.save file raises ValueError.
    """
    path = Path(weights)
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except (OSError, SafetensorError) as exc:
            raise ValueError(f"{str(path)!r} is not a valid .safetensors file: {exc}") from exc
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
        except pickle.UnpicklingError as exc:
            if trust_pickle or not _needs_full_unpickling(exc):
                raise ValueError(f"{str(path)!r} is not a valid checkpoint (a torch.save file of a state dict): "
                                 f"{_last_line(exc)}") from exc
            raise ValueError(
                f"{str(path)!r} is a pickle that holds more than tensors, and unpickling it can run arbitrary "
                "code. Pass --trust-pickle (trust_pickle=True) only if you trust where the file comes from. "
                f"torch said: {str(exc).splitlines()[0]}") from exc
        except (RuntimeError, EOFError, KeyError, IndexError, ValueError, OSError, AttributeError, ImportError,
                UnicodeDecodeError) as exc:
            raise ValueError(f"{str(path)!r} is not a valid checkpoint (a torch.save file of a state dict): "
                             f"{type(exc).__name__}: {_last_line(exc)}") from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{str(path)!r} must hold a state dict (a mapping of names to tensors), "
                         f"got {type(state).__name__}")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{str(path)!r} is not a state dict of tensors: entries {_listing(bad)} are not "
                         "name -> tensor")
    return dict(state)


def _needs_full_unpickling(exc: pickle.UnpicklingError) -> bool:
    """True when torch's weights-only unpickler refused a global (a valid pickle of other objects)."""
    text = str(exc)
    return "GLOBAL" in text or "allowed global" in text or "Unsupported global" in text


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("Check the documentation")]
    return lines[-1].strip() if lines else type(exc).__name__


def _check_weights(state: Mapping[str, Tensor]) -> None:
    """Raise ValueError naming the weights that are not floating point or not finite."""
    not_float = [f"{k} ({v.dtype})" for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        raise ValueError(f"the official checkpoint has non-floating-point weights ({len(not_float)}): "
                         f"{_listing(not_float)}; expected float32/float16/bfloat16 tensors")
    not_finite = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if not_finite:
        raise ValueError(f"the official checkpoint has weights with NaN or infinite values ({len(not_finite)}): "
                         f"{_listing(not_finite)}")


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def model_from_official_state(state: Mapping[str, Tensor], config: STDiffConfig) -> STDiff:
    """Build an STDiff for ``config`` on the CPU and load an official state dict into it.

    Official ODE models (``sde.method == "ode"``) have no diffusion net: its parameters are set
    to zero (g = tanh(0) = 0, consistent with the method). Raises ValueError naming, in official
    names, every missing key, every unexpected key and every shape mismatch.
    """
    ours, unmapped = state_official_to_ours(state)
    with torch.device("meta"):  # no random initialisation: every tensor is assigned below
        model = STDiff(config)
    expected = model.state_dict()
    if config.sde.method == "ode" and not any(k.startswith("sde.diffusion.") for k in ours):
        ours.update({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in expected.items()
                     if k.startswith("sde.diffusion.")})
    missing = [ours_to_official(k) for k in expected if k not in ours]
    unexpected = unmapped + [ours_to_official(k) for k in ours if k not in expected]
    mismatched = [f"{ours_to_official(k)} {tuple(v.shape)} (model expects {tuple(expected[k].shape)})"
                  for k, v in ours.items() if k in expected and v.shape != expected[k].shape]
    problems = [f"{label} ({len(names)}): {_listing(names)}" for label, names in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                if names]
    if problems:
        raise ValueError("the official checkpoint does not match the model config: " + "; ".join(problems))
    _check_weights(ours)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in ours.items()}, strict=True, assign=True)
    return model


def load_official(path: str | os.PathLike, trust_pickle: bool = False, map_location: str | torch.device = "cpu",
                  config: STDiffConfig | None = None) -> STDiff:
    """Load an official STDiff checkpoint (pipeline folder, model folder or raw state dict) as an STDiff.

    ``config`` is needed for a raw state dict without its official config.json; with one it must
    match it and sets the clip lengths. The model is returned in float32 on ``map_location``.
    """
    files = locate_official(path)
    cfg = resolve_config(files, config)
    model = model_from_official_state(read_state_dict(files.weights, trust_pickle), cfg)
    return model.to(map_location)
