"""The ``napari-unet`` command: a thin argparse layer over the engine's packages.

Each sub-command lives in its own module with ``add_parser(subparsers)`` and ``run(args)``.
User errors (:class:`~napari_unet.common.errors.UserInputError`, missing files) print one line
on stderr and exit with code 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .._version import __version__

#: sub-command modules, in the order ``--help`` lists them
COMMANDS: tuple[str, ...] = ("segment", "train", "evaluate", "info", "demo")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="U-Net segmentation, training and evaluation of microscopy images.",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` runs it again
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    from ..common.errors import UserInputError

    try:
        return int(args.func(args) or 0)
    except (UserInputError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        print(f"napari-unet {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `napari-unet info MODEL | head`: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"napari-unet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
