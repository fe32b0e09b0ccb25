"""Putting a Segment result into the viewer: update in place, ask before overwriting edits.

:func:`put_result` runs on the GUI thread when a segmentation returns. The labels go into the
layer ``"<image> labels"``, updated in place (same layer, position, opacity, contour) when it
exists; if the user has painted corrections into that layer since it was produced, the dock
asks first and, if told not to replace them, writes a new layer instead. The probabilities go
into ``"<image> probabilities"``, see-through, on the first object class. The producing model
is recorded (:mod:`._results`) for *Retrain on corrections*.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._layers import output_placement, upsert_layer
from .._model_registry import model_name
from . import _results


def put_result(
    viewer: Any,
    image_layer: Any,
    axes: str,
    labels: Any,
    probs: Any,
    record: _results.ResultRecord,
    confirm_replace: Callable[[str], bool],
) -> Any:
    """Add or update the result layers of ``image_layer``; returns the labels layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Possibly the proxy napari hands plugins.
    image_layer : napari.layers.Image
        The segmented layer (it may have been deleted meanwhile: a warning says so).
    axes : str
        The image data's axes.
    labels : ndarray or dask array
    probs : ndarray or None
        Class probabilities, classes first.
    record : ResultRecord
        How the labels were produced (``produced`` is filled in here).
    confirm_replace : callable(str) -> bool
        Asked, with the layer name, before labels the user edited are replaced.
    """
    from napari.utils.notifications import show_warning

    if not any(ly.unique_id == image_layer.unique_id for ly in viewer.layers):
        show_warning(
            f"U-Net Segment: the image layer {image_layer.name!r} was removed while it was "
            "being segmented; its labels are added anyway"
        )
    placement = output_placement(image_layer, axes)
    name = f"{image_layer.name} labels"
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and _results.was_edited(existing) and not confirm_replace(name):
        name = _free_name(viewer, f"{name} (new)")
    layer = upsert_layer(viewer, "labels", name, labels, placement)
    record.produced = np.array(labels, copy=True) if isinstance(labels, np.ndarray) else None
    _results.record_result(layer, record)
    if probs is not None:
        _put_probabilities(viewer, image_layer, probs, placement)
    return layer


def _put_probabilities(viewer: Any, image_layer: Any, probs: Any, placement: Any) -> None:
    layer = upsert_layer(
        viewer, "image", f"{image_layer.name} probabilities", probs, placement,
        leading=1, colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.5,
        blending="additive",
    )  # fmt: skip
    if probs.shape[0] > 1:  # show the first object class, not the background
        axis = viewer.dims.ndim - layer.ndim
        if viewer.dims.current_step[axis] == 0:
            viewer.dims.set_current_step(axis, 1)


def _free_name(viewer: Any, name: str) -> str:
    """``name``, or ``name 2``, ``name 3``... : the first no layer has."""
    base, n = name, 1
    while name in viewer.layers:
        n += 1
        name = f"{base} {n}"
    return name


def model_record(image_name: str, source: str, model: Any) -> _results.ResultRecord:
    """The record of a run of ``model`` (None: built-in, a Path, or a trained UNet)."""
    if model is None:
        ref: Any = "nuclei"
    elif isinstance(model, Path):
        ref = str(model)
    else:
        ref = model
    return _results.ResultRecord(image_name, source, ref, model_name(source, model), None)


def describe(labels: Any) -> str:
    """The status line's description of a result."""
    if type(labels).__module__.startswith("dask"):
        return f"labels {tuple(labels.shape)} (zarr-backed)"
    return f"{int(labels.max())} label(s) in {tuple(labels.shape)}"


#: the engine's messages name command-line options; the dock names its own settings
_DOCK_WORDS = (
    (
        re.compile(
            r"with --channel N \(channel=N in Python, the Channel box in the Segment dock\)"
        ),
        "in the Channel box",
    ),
    (re.compile(r"--invert (yes|no)"), r"Invert \1 (Advanced)"),
    (re.compile(r"--channel\b"), "Channel"),
    (re.compile(r"--axes "), "Axes "),
    (re.compile(r"\(Correct and retrain in napari\)"), "(Correct and retrain, below)"),
)


def in_dock_words(text: str) -> str:
    """``text`` from the engine with its command-line options named as the dock's settings."""
    for pattern, words in _DOCK_WORDS:
        text = pattern.sub(words, text)
    return text


def drive(gen):
    """Run ``gen`` in the worker thread, passing its events on (and its result back)."""
    return (yield from gen)


def ask_replace(name: str) -> bool:
    """Ask (a dialog) whether to replace the edited labels ``name``; No writes a new layer."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        None,
        "Replace your corrections?",
        f"You have edited the labels {name!r} since they were segmented.\n\n"
        "Yes: replace them with the new result.\nNo: keep them and add the result as a new "
        "layer.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


__all__ = [
    "ask_replace",
    "describe",
    "drive",
    "in_dock_words",
    "model_record",
    "put_result",
]
