"""Exceptions raised for user errors.

Everything a user can get wrong (a bad argument, a bad file, a model that does not fit the
image) raises :class:`UserInputError` or a subclass. The CLI turns these into one line and exit
code 2; the widgets show them as napari notifications. Anything else is a bug.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """A problem with the user's input, with a message that says how to fix it."""


class ModelFileError(UserInputError):
    """A model file that cannot be read: truncated, not a model, or from a newer version."""


class ShapeError(UserInputError):
    """An array whose shape the network or the function cannot take."""


class Cancelled(Exception):
    """Work resumed after its ``stop`` event was set (it was cancelled part-way)."""


#: what to do about the operating-system errors a user can cause or fix
_OS_HINTS = {
    "EACCES": "check the permissions or choose another path",
    "EPERM": "check the permissions or choose another path",
    "EROFS": "the file system is read-only: choose another path",
    "ENOSPC": "the disk is full: free some space or choose another output folder",
    "EDQUOT": "the disk quota is exceeded: free some space or choose another output folder",
    "ENOENT": "check the path",
    "EEXIST": "choose another name, or pass --overwrite where the command has it",
    "EISDIR": "a folder was given where a file is expected",
    "ENOTDIR": "a file was given where a folder is expected",
    "ENAMETOOLONG": "choose a shorter path",
    "EMFILE": "too many open files: raise the limit (ulimit -n) or process fewer files",
    "EIO": "the disk or network file system reported an input/output error",
}


def describe_os_error(err: OSError, *, with_path: bool = True) -> str:
    """One line for an :class:`OSError`: what failed, on which path, and what to do.

    Parameters
    ----------
    err : OSError
    with_path : bool
        Name the file(s) of the error (leave out when the caller names them already).

    Examples
    --------
    >>> describe_os_error(PermissionError(13, "Permission denied", "/x"))
    "Permission denied: '/x' (check the permissions or choose another path)"
    """
    import errno

    code = errno.errorcode.get(err.errno or -1, "")
    what = err.strerror or str(err) or type(err).__name__
    paths = [p for p in (err.filename, err.filename2) if p is not None]
    text = what + (": " + " -> ".join(repr(str(p)) for p in paths) if with_path and paths else "")
    hint = _OS_HINTS.get(code)
    return f"{text} ({hint})" if hint else text


def write_error(err: BaseException, path: object, what: str = "the file") -> OSError:
    """A library's failure to write ``path`` as an :class:`OSError` the CLI reports in one line.

    torch and safetensors report a full disk or a failed write as ``RuntimeError`` or their own
    exception types, with C++ details; this keeps the cause and names the file.
    """
    import errno

    if isinstance(err, OSError):
        return err
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    full = "No space left" in text or "os error 28" in text
    code = errno.ENOSPC if full else errno.EIO
    return OSError(code, f"cannot write {what} (disk full or failing?): {text}", str(path))
