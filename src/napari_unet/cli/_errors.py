"""The one place where every sub-command's failures become an exit code and one line.

* user and OS errors (:class:`~napari_unet.common.errors.UserInputError`, ``OSError``, out of
  memory): exit 2 and ``napari-unet CMD: error: WHAT`` on stderr, no traceback;
* Ctrl-C or SIGTERM: exit 130 and ``napari-unet CMD: interrupted``;
* anything else is a bug: exit 1 and ``internal error ..., please report`` naming a log file
  that holds the traceback (``--debug`` prints it instead).

Sub-commands only raise; a new command or option inherits all of this.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
#: longest message printed (a message is one line; a long path list is cut)
MAX_MESSAGE = 600
ISSUES_URL = "https://github.com/napari-unet/napari-unet/issues"


class OneLineParser(argparse.ArgumentParser):
    """argparse, with usage errors on one line: ``napari-unet CMD: error: ... (see --help)``."""

    def error(self, message: str):
        prog = self.prog
        self.exit(EXIT_USAGE, f"{prog}: error: {one_line(message)} (see {prog} --help)\n")


def one_line(text: str) -> str:
    """``text`` on one line, at most :data:`MAX_MESSAGE` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 3] + "..."


def _say(command: str, message: str) -> None:
    print(f"napari-unet {command}: {one_line(message)}", file=sys.stderr, flush=True)


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    name = type(err).__name__
    return name == "OutOfMemoryError" or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run one sub-command and turn whatever it raises into an exit code and one line.

    A command that does not succeed leaves no empty output folder that it created behind.
    """
    from ..common.outputs import forget_made_folders, remove_made_folders

    forget_made_folders()
    code = _run_guarded(func, args)
    if code != 0:
        remove_made_folders()
    return code


def _run_guarded(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    from ..common.errors import UserInputError, describe_os_error

    command = getattr(args, "command", None) or "command"
    debug = bool(getattr(args, "debug", False))
    try:
        with _sigterm_as_interrupt():
            return int(func(args) or 0)
    except UserInputError as err:
        if debug:
            traceback.print_exc()
        _say(command, f"error: {err}")
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `napari-unet info MODEL | head`: not an error
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as err:
        if debug:
            traceback.print_exc()
        _say(command, f"error: {describe_os_error(err)}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        from ..common.atomic import remove_own_temp_dirs

        remove_own_temp_dirs()  # a scratch folder the interrupt caught being made or removed
        _say(command, "interrupted; nothing half-written was left behind")
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug, or a library failure nobody foresaw
        if _is_out_of_memory(err):
            if debug:
                traceback.print_exc()
            _say(
                command,
                "error: not enough memory for this job; use smaller tiles or batches "
                "(--tile, --batch-size / --batch, --patch) or a smaller image",
            )
            return EXIT_USAGE
        return _internal_error(command, err, debug)


def _internal_error(command: str, err: BaseException, debug: bool) -> int:
    summary = (
        f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    )
    if debug:
        traceback.print_exc()
        _say(command, f"internal error ({summary}), please report it at {ISSUES_URL}")
        return EXIT_INTERNAL
    log = _write_log(command, err)
    where = f"the traceback is in {log}" if log else "rerun with --debug for the traceback"
    _say(
        command,
        f"internal error ({summary[:200]}), please report it at {ISSUES_URL}; {where} "
        "(or rerun with --debug)",
    )
    return EXIT_INTERNAL


def log_folder() -> Path:
    """Where internal-error logs go: ``$XDG_STATE_HOME/napari-unet/logs`` (or ``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "napari-unet" / "logs"


def _write_log(command: str, err: BaseException) -> Path | None:
    from .._version import __version__

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = f"napari-unet {__version__} {command}: {' '.join(sys.argv)}\n" + "".join(
        traceback.format_exception(type(err), err, err.__traceback__)
    )
    for folder in (log_folder(), Path(tempfile.gettempdir())):
        path = folder / f"napari-unet-error-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError:
            continue
        return path
    return None


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler) unwinds like Ctrl-C, so temporaries are removed.

    A command may install its own handler inside (``train`` stops gracefully).
    """

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
