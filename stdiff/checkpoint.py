"""Exported models: a folder with ``config.json`` and ``model.safetensors``.

Format version 2 (written now): ``config.json`` records in ``"checksums"`` the SHA-256 of
``model.safetensors`` and of ``config.json`` itself (of its JSON content without the
``"checksums"`` entry, serialised canonically: sorted keys, no spaces). Loading refuses, before
building anything:

- a config.json over :data:`MAX_CONFIG_BYTES`, an unknown ``format`` or ``version``;
- a checksum table that is missing, empty, lacks a file, or names anything but the folder's
  ``config.json`` / ``model.safetensors`` (no paths) -- unless ``trust_unverified=True``;
- a checksum mismatch, a model config outside :data:`stdiff.config.LIMITS`;
- weights whose names or shapes differ from the config, non-floating weights, NaN or infinite
  weights. Floating weights of another precision (float16, bfloat16, float64) are converted to
  the model's float32.

Version 1 folders (no checksum of config.json) still load when their table covers
``model.safetensors``: their config is validated like any other, but a changed config.json is not
detected. An official STDiff folder (see :mod:`stdiff.official`) is converted on load.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import STDiffConfig
from .fileio import atomic_dir, checksums, resolve_dir, verify_checksums

__all__ = ["save_pretrained", "load_pretrained", "is_pretrained_dir", "FORMAT", "READABLE_VERSIONS",
           "MAX_CONFIG_BYTES", "config_sha256"]

FORMAT = {"format": "stdiff", "version": 2}
#: Format versions this package loads (1: checksum of the weights only; 2: of the config too).
READABLE_VERSIONS = (1, 2)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Largest config.json read (an stdiff config is about 2 KB).
MAX_CONFIG_BYTES = 1 << 20
_COVERED = {1: (WEIGHTS_NAME,), 2: (WEIGHTS_NAME, CONFIG_NAME)}


def is_pretrained_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by :func:`save_pretrained`."""
    p = Path(path)
    return (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def config_sha256(meta: dict) -> str:
    """SHA-256 of a config.json mapping without its ``"checksums"`` entry (canonical JSON)."""
    body = {k: v for k, v in meta.items() if k != "checksums"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def save_pretrained(model: torch.nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model`` (an STDiff) to the folder ``path`` atomically; returns the path.

    ``extra``: JSON-serialisable metadata stored in config.json under "extra" (e.g. training step).
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME))
        config = {**FORMAT, "model": model.config.to_dict(), "extra": extra or {}}
        config["checksums"] = {**checksums(tmp, [WEIGHTS_NAME]), CONFIG_NAME: config_sha256(config)}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return Path(path)


def _read_meta(p: Path) -> dict:
    """config.json of ``p`` as a mapping, its size, format and version checked."""
    where = str(p / CONFIG_NAME)
    try:
        size = (p / CONFIG_NAME).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"{where!r} is {size:,} bytes, above the limit of {MAX_CONFIG_BYTES:,} "
                             "(an stdiff config is a few KB)")
        meta = json.loads((p / CONFIG_NAME).read_bytes()[:MAX_CONFIG_BYTES].decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{where!r} is not a readable JSON config: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT["format"]:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{where!r} is not an stdiff config (format={found!r})")
    version = meta.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ValueError(f"{where!r} has format version {version!r}; this stdiff reads versions "
                         f"{list(READABLE_VERSIONS)} (a newer stdiff may have written it)")
    return meta


def _verify(p: Path, meta: dict, trust_unverified: bool) -> None:
    """Check the checksum table of a folder's config.json against its files (see the module doc)."""
    where = str(p / CONFIG_NAME)
    covered = _COVERED[meta["version"]]
    table = meta.get("checksums")
    if table is None or table == {}:
        if trust_unverified:
            return
        raise ValueError(f"{where!r} records no checksums: its files cannot be verified (format version "
                         f"{meta['version']} records them); load it with trust_unverified=True "
                         "(--trust-unverified) only if you trust where it came from")
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ValueError(f"{where!r}: checksums must map file names to SHA-256 strings, got {table!r}")
    unknown = sorted(set(table) - set(covered))
    if unknown:
        raise ValueError(f"{where!r}: checksums may name only {list(covered)} (files of the folder, no paths), "
                         f"got {unknown}")
    missing = [name for name in covered if name not in table]
    if missing:
        raise ValueError(f"{where!r}: checksums lack {missing} (format version {meta['version']} covers "
                         f"{list(covered)}); load it with trust_unverified=True only if you trust it")
    if CONFIG_NAME in table and table[CONFIG_NAME] != config_sha256(meta):
        raise ValueError(f"checksum mismatch in {str(p)!r}: {CONFIG_NAME} changed since it was written")
    verify_checksums(p, {name: digest for name, digest in table.items() if name != CONFIG_NAME})


def _check_weights(p: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Names, shapes, dtypes (floating weights are converted in place) and finiteness of ``state``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"weights in {str(p)!r} do not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    for name, tensor in state.items():
        want = expected[name].dtype
        if tensor.dtype != want:
            if not (tensor.is_floating_point() and want.is_floating_point):
                raise ValueError(f"weights in {str(p)!r}: {name} has dtype {tensor.dtype}, expected {want}")
            state[name] = tensor.to(want)
    bad = sorted(k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if bad:
        raise ValueError(f"weights in {str(p)!r} hold NaN or infinite values ({', '.join(bad[:5])}"
                         f"{', ...' if len(bad) > 5 else ''}): a corrupt file or a diverged training")


def load_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    trust_unverified: bool = False):
    """Load an exported STDiff folder (or an official STDiff folder, converted).

    Raises FileNotFoundError/ValueError with the reason (see the module doc for what is refused).
    trust_unverified: load a folder whose config.json records no (or incomplete) checksums.
    """
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
    try:
        config = STDiffConfig.from_dict(meta.get("model"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{str(p / CONFIG_NAME)!r}: model: {exc}") from exc
    _verify(p, meta, trust_unverified)
    with torch.device("meta"):  # no random initialisation: every tensor is assigned from the file
        model = STDiff(config)
    try:
        state = load_file(str(p / WEIGHTS_NAME), device=str(map_location))
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"{str(p / WEIGHTS_NAME)!r} is not a readable safetensors file: {exc}") from exc
    _check_weights(p, state, model.state_dict())
    model.load_state_dict(state, strict=True, assign=True)
    return model
