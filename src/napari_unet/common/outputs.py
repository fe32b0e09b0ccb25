"""Output paths checked before the work: a failure costs seconds, not an epoch.

:func:`check_output_file` and :func:`check_output_dir` refuse an output that cannot be written
(read-only folder, a file where a folder is needed, an existing result without ``overwrite``)
with one clear :class:`~napari_unet.common.errors.UserInputError`, create missing parent
folders, and remove the temporaries a killed earlier run left beside the output.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .atomic import remove_stale_temporaries
from .errors import UserInputError, describe_os_error

log = logging.getLogger(__name__)

__all__ = [
    "check_output_dir",
    "check_output_file",
    "forget_made_folders",
    "probe_writable",
    "remove_made_folders",
]


def probe_writable(folder: Path, arg: str) -> None:
    """Create and remove a file in ``folder``: the only test that also holds for root users,
    read-only mounts and full disks."""
    probe = folder / f".napari-unet-probe.{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0")
    except OSError as err:
        raise UserInputError(
            f"{arg} {folder}: cannot write there ({describe_os_error(err, with_path=False)}); "
            "choose another location"
        ) from err
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def _make_folder(folder: Path, arg: str) -> None:
    if folder.is_dir():
        return
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise UserInputError(
                f"{arg} {folder}: {parent} is a file, not a folder; choose another location"
            )
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(
            f"{arg} {folder}: cannot create the folder ({describe_os_error(err, with_path=False)})"
        ) from err
    _MADE.extend(missing)


#: output folders this process created (each missing parent too), for a failed command to undo
_MADE: list[Path] = []


def forget_made_folders() -> None:
    """Start a new record of created folders (at the start of each command)."""
    _MADE.clear()


def remove_made_folders() -> None:
    """Remove the output folders this process created that are still empty, deepest first.

    A command that fails or is interrupted calls it (``cli._errors.run_command``), so a
    refused run leaves no empty folder behind; a folder holding anything (another image's
    result, a training checkpoint) stays. The record is cleared either way.
    """
    for folder in sorted(set(_MADE), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone: leave it
            pass
    _MADE.clear()


def check_output_file(
    path: str | os.PathLike,
    arg: str,
    *,
    overwrite: bool = False,
    suffixes: tuple[str, ...] = (),
) -> Path:
    """Check an output file before the work; create its folder; clear stale temporaries.

    Parameters
    ----------
    path : path-like
        The file to be written (atomically, later).
    arg : str
        The argument that names it (``"-o/--output"``, ``"--csv"``), named in the messages.
    overwrite : bool
        Whether an existing file may be replaced.
    suffixes : tuple of str
        Accepted suffixes (lower case, e.g. ``(".tif", ".tiff")``); any when empty.

    Returns
    -------
    Path

    Raises
    ------
    UserInputError
        The path is a folder, exists without ``overwrite``, has another suffix, or its folder
        cannot be created or written.
    """
    path = Path(path)
    if str(path).endswith(os.sep) or path.is_dir():
        raise UserInputError(f"{arg} {path} is a folder; give a file name")
    if suffixes and not path.name.lower().endswith(suffixes):
        raise UserInputError(f"{arg} must end in {' or '.join(suffixes)}, got {path}")
    if path.exists() and not overwrite:
        raise UserInputError(f"{arg} {path} exists; pass --overwrite to replace it")
    _make_folder(path.parent, arg)
    probe_writable(path.parent, arg)
    _report_in_use(path, arg)
    return path


#: a new output folder with one of these suffixes is a file name given by mistake
_FILE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".csv", ".safetensors"}


def check_output_dir(path: str | os.PathLike, arg: str) -> Path:
    """Check (and create) an output folder before the work.

    Raises
    ------
    UserInputError
        The path is a file (or a new path named like one: ``result.tif``), or the folder
        cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{arg} {path} is a file, not a folder; give a folder")
    if not path.exists() and path.suffix.lower() in _FILE_SUFFIXES:
        raise UserInputError(
            f"{arg} takes a folder (each result is written inside it), and {path} looks like "
            f"a file name; give a folder, e.g. {arg.split('/')[0]} {path.with_suffix('')}"
        )
    _make_folder(path, arg)
    probe_writable(path, arg)
    return path


def check_output_target(path: str | os.PathLike, arg: str, *, overwrite: bool) -> Path:
    """One result (file or zarr store) inside a checked output folder: exists? stale temps?"""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserInputError(f"{path} exists; pass --overwrite to replace it")
    _report_in_use(path, arg)
    return path


def _report_in_use(path: Path, arg: str) -> None:
    _, in_use = remove_stale_temporaries(path)
    if in_use:
        raise UserInputError(
            f"{arg} {path} is being written by another running process ({in_use[0].name}); "
            "wait for it to finish or choose another name"
        )
