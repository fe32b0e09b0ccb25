"""Atomic writes: a half-written file or zarr store never sits under its final name.

Files and zarr stores are written under a hidden temporary name in the destination's own folder
(``.NAME.PID-XXXXXXXX.tmp``) and renamed into place when complete, as git and rsync do. A
failure or an interruption (Ctrl-C) removes the temporary; a killed process (SIGKILL, power
cut) leaves it behind, and :func:`remove_stale_temporaries` finds it on the next run: the
process id in its name tells whether its writer is still alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = [
    "atomic_dir",
    "atomic_write",
    "remove_stale_temp_dirs",
    "remove_stale_temporaries",
    "replace_dir",
    "temporary_name",
]


def temporary_name(path: str | os.PathLike, tag: str = "") -> Path:
    """A fresh hidden name beside ``path``: ``.NAME.PID-[TAG-]RANDOM.tmp`` (not created)."""
    path = Path(path)
    middle = f"{os.getpid()}-{tag + '-' if tag else ''}{secrets.token_hex(4)}"
    return path.parent / f".{path.name}.{middle}.tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    If the block raises (or is interrupted), ``path`` is untouched and the temporary file is
    removed; if the process is killed, the next :func:`remove_stale_temporaries` removes it.

    Examples
    --------
    >>> with atomic_write("model.safetensors") as tmp:  # doctest: +SKIP
    ...     save_file(tensors, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` (e.g. a zarr store); on success it becomes ``path``.

    An existing ``path`` is replaced only once the new one is complete (moved aside, the new
    one renamed into place, the old one removed). On failure or interruption the temporary
    folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename the complete folder ``tmp`` to ``path``, replacing an existing ``path``.

    The old ``path`` is moved aside first and removed only once the new one is in place.
    """
    tmp, path = Path(tmp), Path(path)
    old = None
    if path.exists() or path.is_symlink():
        old = temporary_name(path, "old")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        _remove(old)


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[\w-]+\.tmp$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Remove the temporaries of ``path`` left by a killed run (``.NAME.*.tmp`` beside it).

    A temporary whose writer (the process id in its name) is still running is left alone and
    reported; one from a dead process, or without a process id (older versions), is removed.

    Returns
    -------
    removed, in_use : lists of Path
    """
    path = Path(path)
    removed: list[Path] = []
    in_use: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed, in_use
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or not match.group("name") == path.name:
            continue
        pid = match.group("pid")
        if pid is not None and _alive(int(pid)):
            in_use.append(entry)
            continue
        try:
            _remove(entry)
        except OSError as err:
            log.warning("could not remove the leftover temporary %s: %s", entry, err)
            continue
        log.warning("removed %s, left over from an interrupted run", entry)
        removed.append(entry)
    return removed, in_use


def remove_stale_temp_dirs(prefix: str) -> list[Path]:
    """Remove ``<tempdir>/<prefix><pid>-*`` folders whose process is gone (killed runs)."""
    removed = []
    for entry in _temp_entries(prefix):
        parts = entry.name[len(prefix) :].split("-", 1)
        if len(parts) != 2 or not parts[0].isdigit() or _alive(int(parts[0])):
            continue  # not ours (no "PID-" after the prefix), or its process still runs
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def remove_own_temp_dirs(prefix: str = "napari-unet-") -> list[Path]:
    """Remove ``<tempdir>/<prefix>[<word>-]<pid>-*`` folders of this very process.

    For a command line interrupted part-way: an interrupt that lands while a temporary folder
    is being made or removed (a zarr store: many files) can leave it behind, and the process
    is about to leave. Not for a process that may still run other work (napari).
    """
    pattern = re.compile(rf"^{re.escape(prefix)}(?:[a-z]+-)?{os.getpid()}-")
    removed = []
    for entry in _temp_entries(prefix):
        if pattern.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _temp_entries(prefix: str) -> list[Path]:
    """``<tempdir>/<prefix>*`` (none if the folder cannot be listed)."""
    try:
        return list(Path(tempfile.gettempdir()).glob(f"{prefix}*"))
    except OSError:
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
