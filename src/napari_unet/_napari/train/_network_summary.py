"""The Train dock's network checks: the layer summary, the patch check, torch off the GUI thread.

The network is built on torch's ``meta`` device (no memory, no compute), so the summary and the
patch-size check are instant even for the paper's 31 M parameters; torch itself is imported in a
worker thread the first time (a few seconds), never on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import TextEdit


def summary_text(
    *,
    ndim: int,
    depth: int,
    base_filters: int,
    batch_norm: bool,
    patch: int,
    in_channels: int,
    num_classes: int,
) -> str:
    """The layer summary of such a U-Net on a ``patch``-sized input, or why it cannot run.

    The network is built on torch's ``meta`` device: no memory, no compute, instant even
    for the paper's 31 M parameters.
    """
    import torch

    from ...common.errors import UserInputError
    from ...model.summary import count_parameters, format_summary, layer_summary
    from ...model.unet import UNet

    try:
        with torch.device("meta"):
            net = UNet(
                in_channels,
                num_classes,
                ndim=ndim,
                depth=depth,
                base_filters=base_filters,
                batch_norm=batch_norm,
                padding="same",
            )
        rows = layer_summary(net, (patch,) * ndim)
    except UserInputError as err:
        return f"patch size {patch}: {err}"
    shape = ", ".join([str(patch)] * ndim)
    head = f"input (1, {in_channels}, {shape}), {num_classes} classes\n"
    return head + format_summary(rows, count_parameters(net))


def check_patch(config: Any) -> None:
    """Raise ShapeError (with the nearest valid sizes) if the network cannot take the patch."""
    import torch

    from ...model.unet import UNet

    with torch.device("meta"):
        net = UNet(1, 2, ndim=config.ndim, depth=config.depth, base_filters=1, batch_norm=False)
    net.check_input_shape(config.patch_shape())


_TORCH_IMPORT: list[Any] = []


def import_torch_then(callback: Callable[[], None]) -> None:
    """Import torch in a worker thread (once), then call ``callback`` on the GUI thread."""
    from napari.qt.threading import create_worker

    def _import() -> None:
        import torch  # noqa: F401

    if _TORCH_IMPORT:  # already importing: call back too when it is done
        _TORCH_IMPORT[0].returned.connect(lambda _: callback())
        return
    worker = create_worker(_import, _start_thread=False)
    _TORCH_IMPORT.append(worker)
    worker.returned.connect(lambda _: callback())
    worker.finished.connect(_TORCH_IMPORT.clear)
    worker.start()


def read_only_monospace(text: TextEdit) -> None:
    from qtpy.QtGui import QFontDatabase
    from qtpy.QtWidgets import QTextEdit

    native = text.native
    native.setReadOnly(True)
    native.setLineWrapMode(QTextEdit.LineWrapMode.NoWrap)
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setPointSize(max(font.pointSize() - 1, 7))
    native.setFont(font)
    native.setMinimumHeight(120)
    native.setMaximumHeight(220)


def io_channels(sources: list[Any], task: str) -> tuple[int, int]:
    """Input channels and classes for the summary, from the first pair (cheap guesses)."""
    from ...common.errors import UserInputError
    from ._train_inputs import channel_axis

    channels, classes = 1, 3
    if sources:
        try:
            axis = channel_axis(sources[0])
        except UserInputError:
            axis = None
        channels = 1 if axis is None else int(sources[0].image.shape[axis])
    if task == "semantic":
        labels = sources[0].labels if sources else None
        classes = int(np.max(labels)) + 1 if isinstance(labels, np.ndarray) else 2
        classes = max(classes, 2)
    return channels, classes
