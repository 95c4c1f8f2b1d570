"""Atomic file writes: nothing half-written is ever left at the final path.

- :func:`atomic_path` / :func:`atomic_write_text`: a file is written under a temporary name
  next to its final path, fsynced and renamed onto it.
- :func:`atomic_dir`: a folder is written under a temporary name; the previous folder is moved
  to ``.<name>.old`` and the new one renamed into place. A process killed between the two renames
  leaves ``.<name>.old``: :func:`resolve_dir` (used by the loaders) falls back to it, and the next
  :func:`atomic_dir` on the same path restores it and removes leaked ``.<name>.*.tmp`` folders.
  One writer per path at a time.
- Failed writes (a full disk, a read-only folder) raise :class:`WriteError` naming the path.
- :func:`file_sha256` / :func:`checksums` / :func:`verify_checksums`: per-file SHA-256 recorded
  in a checkpoint's metadata and checked when it is loaded.
- :func:`folder_lock`: one writer per folder (``stdiff train/evaluate/predict --out``).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["WriteError", "atomic_path", "atomic_dir", "atomic_write_text", "resolve_dir", "check_output_dir",
           "file_sha256", "checksums", "verify_checksums", "FolderLocked", "folder_lock", "lock_path"]

# texts of torch's and safetensors' I/O errors ("unexpected pos": torch.save's writer on a full disk)
_WRITE_HINTS = ("writ", "space", "basic_ios", "iostream", "os error", "storage", "inline_container", "unexpected pos")


class WriteError(OSError):
    """Writing a file or folder failed (no space left, not writable, ...); the message names the path."""


def _umask() -> int:
    """The process umask, read from /proc/self/status without changing it (0o022 where unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, WriteError):
        return False
    if isinstance(exc, OSError):
        return True
    return type(exc).__name__ in ("RuntimeError", "SafetensorError") and any(
        hint in str(exc).lower() for hint in _WRITE_HINTS)


def _no_space(exc: BaseException, where: Path) -> bool:
    if getattr(exc, "errno", None) == errno.ENOSPC or "no space left" in str(exc).lower() or "os error 28" in str(exc):
        return True
    try:
        return os.statvfs(where).f_bavail == 0
    except OSError:
        return False


def _write_error(path: Path, exc: BaseException) -> WriteError:
    """The WriteError for a failed write of ``path``."""
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if _no_space(exc, folder if folder.is_dir() else folder.parent):
        return WriteError(f"no space left on device writing {str(path)!r}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
    return WriteError(f"cannot write {str(path)!r}: {reason}")


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """Turn I/O failures inside the block into a WriteError naming ``path``."""
    try:
        yield
    except BaseException as exc:
        if _is_write_failure(exc):
            raise _write_error(path, exc) from exc
        raise


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Raise ValueError (naming ``what``, e.g. "--out") unless ``path`` can be a writable folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a file, expected a folder")
    existing = next(a for a in (p, *p.absolute().parents) if a.exists())
    if not existing.is_dir():
        raise ValueError(f"{what} {str(p)!r} is under {str(existing)!r}, which is a file, expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(p)!r}: the folder {str(existing)!r} is not writable")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``."""
    final = Path(path)
    with _write_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _write_errors(final):
            yield tmp_path
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the usual permissions
            os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def _old(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def resolve_dir(path: str | os.PathLike) -> Path:
    """``path``, or its ``.<name>.old`` twin when a writer was killed between atomic_dir's renames."""
    p = Path(path)
    return _old(p) if not p.exists() and _old(p).is_dir() else p


def _recover(final: Path) -> None:
    """Undo what a killed atomic_dir left: restore ``.<name>.old``, delete ``.<name>.*.tmp`` folders."""
    old = _old(final)
    if not final.exists() and old.is_dir():
        os.replace(old, final)
    for leaked in final.parent.glob(f".{final.name}.*.tmp"):
        if leaked.is_dir():
            shutil.rmtree(leaked, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` as a whole."""
    final = Path(path)
    with _write_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        _recover(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        with _write_errors(final):
            yield tmp
            umask = _umask()
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700: give the folder the usual permissions
            for child in tmp.rglob("*"):
                os.chmod(child, (0o777 if child.is_dir() else 0o666) & ~umask)
            old = _old(final)
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)  # between the renames only .<name>.old exists: resolve_dir finds it
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` of the files ``names`` in ``folder``."""
    return {name: file_sha256(Path(folder) / name) for name in names}


def verify_checksums(folder: str | os.PathLike, recorded: dict[str, str]) -> None:
    """Raise ValueError naming every file of ``folder`` whose SHA-256 differs from ``recorded``.

    Names must be plain names of regular files directly inside ``folder`` (no paths, no devices)."""
    if not isinstance(recorded, dict):
        raise ValueError(f"checksums recorded for {str(folder)!r} must be a mapping, got {type(recorded).__name__}")
    for name in recorded:
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or os.sep in name \
                or (os.altsep and os.altsep in name) or "\0" in name:
            raise ValueError(f"checksums recorded for {str(folder)!r} may name only files inside the folder, "
                             f"got {name!r}")
        if not (Path(folder) / name).is_file():
            raise ValueError(f"checksums recorded for {str(folder)!r} name {name!r}, which is not a regular file "
                             "of the folder")
    bad = [name for name, digest in sorted(recorded.items()) if file_sha256(Path(folder) / name) != digest]
    if bad:
        raise ValueError(f"checksum mismatch in {str(folder)!r}: {', '.join(bad)} changed since it was written "
                         "(corrupt file)")


# ---- one writer per folder -----------------------------------------------------------------------
class FolderLocked(RuntimeError):
    """Another live process writes the folder (the message names it: pid, host, command)."""


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` next to it (outside, so that replacing the
    folder as a whole does not drop the lock)."""
    p = Path(folder).absolute().resolve()
    if not p.name:
        raise ValueError(f"cannot lock the root folder {str(p)!r}: choose a subfolder")
    return p.with_name(f".{p.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def _holder(path: Path) -> dict:
    """What a lock file says about its holder ({} when unreadable or empty)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"({holder.get('command', 'unknown command')}, since {holder.get('since', '?')})")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the block: one writer per folder.

    The lock is an exclusive ``flock`` on :func:`lock_path` (released by the kernel when the process
    dies, so a crashed run leaves no lock behind on this machine) and the file records the holder's
    pid, host and command. A second writer gets :class:`FolderLocked` naming the holder (``what``
    names the option, e.g. "--out"). A lock file left by a process of this host that no longer runs
    is stale and taken over; one recorded by another host whose lock cannot be taken here (a shared
    file system without flock) is refused with the file to delete if that run is gone.
    """
    import datetime
    import fcntl
    import json
    import socket
    import sys

    path = lock_path(folder)
    host = socket.gethostname()
    with _write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with _write_errors(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = _holder(path)
            if holder.get("host") == host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
                raise FolderLocked(f"{what} {str(folder)!r} is locked by {_describe(holder)}, which no longer runs, "
                                   f"but its lock is still held: delete {str(path)!r} if no run writes there")
            raise FolderLocked(f"{what} {str(folder)!r} is being written by another run: {_describe(holder)}; wait "
                               f"for it to finish or choose another {what} (lock file {str(path)!r})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder released (unlinked) the file between our open and flock: retry
            break
        os.close(fd)
    try:
        previous = _holder(path)
        if previous and previous.get("host") != host and previous.get("pid") != os.getpid():
            # a lock written on another machine: flock may not reach across a network file system
            os.close(fd)
            raise FolderLocked(f"{what} {str(folder)!r} is locked by {_describe(previous)}: if that run is gone, "
                               f"delete {str(path)!r}")
        record = {"pid": os.getpid(), "host": host, "command": " ".join(sys.argv)[:500],
                  "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before unlocking: a waiter that opened this file sees it unlinked and retries
        os.close(fd)
