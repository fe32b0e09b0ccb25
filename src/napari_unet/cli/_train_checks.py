"""``napari-unet train``: the outputs and the checkpoint, checked before any data is read.

A fresh run never replaces a model file without ``--overwrite``, nor the checkpoint of an
earlier (interrupted) run without ``--resume`` or ``--overwrite``; a ``--resume`` checkpoint is
read (safely) before the data, so a bad one costs seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def check_train_outputs(args: argparse.Namespace) -> Path:
    """Check the inputs and outputs that cost nothing to check, before any work; the checkpoint."""
    from ..common.errors import UserInputError
    from ..common.outputs import check_output_file
    from ..training.checkpoint import read_checkpoint

    if (args.val_images is None) != (args.val_labels is None):
        raise UserInputError("--val-images and --val-labels go together: give both or neither")
    check_output_file(
        args.output,
        "-o/--output",
        overwrite=args.overwrite or args.resume is not None,
        suffixes=(".safetensors",),
    )
    checkpoint = args.checkpoint or args.output.with_suffix(".ckpt")
    _check_checkpoint(checkpoint, args)
    if args.resume is not None:
        read_checkpoint(args.resume)  # a bad or unsafe file is refused before the data is read
    return checkpoint


def check_processes(args: argparse.Namespace) -> None:
    """``--nproc`` against ``--batch``, ``--device`` and the machine, before torchrun starts."""
    from ..common.device import resolve_device
    from ..training.ddp import check_world

    check_world(args.nproc, args.batch, resolve_device(args.device))


def _check_checkpoint(checkpoint: Path, args: argparse.Namespace) -> None:
    """A fresh run never overwrites the checkpoint of another (interrupted) run silently."""
    from ..common.errors import UserInputError
    from ..common.outputs import check_output_file

    if _same_file(checkpoint, args.output):
        raise UserInputError("--checkpoint must be another file than -o/--output")
    same = args.resume is not None and _same_file(checkpoint, args.resume)
    if checkpoint.is_file() and not (same or args.overwrite):
        if args.resume is None:
            raise UserInputError(
                f"the checkpoint {checkpoint} of an earlier run exists: continue that run with "
                f"--resume {checkpoint}, or pass --overwrite to start over"
            )
        raise UserInputError(
            f"--checkpoint {checkpoint} exists and is not the one resumed ({args.resume}); "
            "pass --overwrite to replace it or choose another --checkpoint"
        )
    check_output_file(checkpoint, "--checkpoint", overwrite=True, suffixes=())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
