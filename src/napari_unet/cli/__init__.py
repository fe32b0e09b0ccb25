"""The ``napari-unet`` command: a thin argparse layer over the engine's packages.

Each sub-command lives in its own module with ``add_parser(subparsers)`` and ``run(args)``.
All of them run through :func:`._errors.run_command`: user and OS errors print one line on
stderr and exit with code 2 (never a traceback); usage errors are one line too; internal errors
exit 1 with "please report" and the traceback in a log file (``--debug`` prints it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._version import __version__
from ._errors import EXIT_INTERRUPTED, EXIT_USAGE, OneLineParser, run_command

#: sub-command modules, in the order ``--help`` lists them
COMMANDS: tuple[str, ...] = ("segment", "train", "evaluate", "info", "export", "demo")

__all__ = ["COMMANDS", "EXIT_USAGE", "build_parser", "console_main", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="napari-unet",
        description="U-Net segmentation, training and evaluation of microscopy images.",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error (otherwise internal errors go to a log file)",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser
    )
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(sub)
    for command in sub.choices.values():  # `napari-unet CMD ... --debug / -v` work too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="print the traceback of an error")  # fmt: skip
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log progress details")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # usage errors (one line, exit 2), --help and --version (0)
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` runs it again
    handler = _BarSafeHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    return run_command(args.func, args)


class _BarSafeHandler(logging.StreamHandler):
    """Log lines on stderr that start on a line of their own while a progress bar is drawn.

    A tqdm bar redraws its line with ``\r`` and no newline; a log line written then would be
    glued to the bar. This handler ends the bar's line first (clears it on a terminal, where
    the bar redraws itself below) instead of tqdm's logging redirect, which the interrupt
    handling avoids (``common/progress.py``).
    """

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm")
        if tqdm is not None and len(getattr(tqdm.tqdm, "_instances", ())) > 0:
            tty = getattr(self.stream, "isatty", lambda: False)()
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\r\x1b[K" if tty else "\n")
        super().emit(record)


def console_main() -> NoReturn:
    """Entry point of the ``napari-unet`` command and of ``python -m napari_unet``.

    After an interrupt (Ctrl-C, SIGTERM) the command has already removed what it was writing
    and said so; the process then leaves at once with exit code 130. A normal interpreter
    shutdown can hang at that point, joining a worker thread that a library (dask's thread
    pool) had started but not yet registered when the signal landed, or end by SIGINT instead
    of 130 (CPython remembers an interrupt that ended an inner evaluation).
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console_main()
