"""What each Segment result layer came from, and whether the user has corrected it since.

The Segment dock records, for every Labels layer it writes, the model that produced it and a
copy of the labels as produced. A paint, fill or erase stroke marks the layer as edited; the
corrected pixels are where the layer now differs from that copy. The Segment dock asks before
it overwrites an edited result, and *Retrain on corrections* fine-tunes the producing model on
the corrected labels. Records live in memory for the session, keyed by the layer's
``unique_id`` (layers handed to plugins are proxies: identity checks do not work).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ResultRecord:
    """How a Labels layer was produced.

    Attributes
    ----------
    image_name : str
        The image layer it segments.
    model_source : str
        The Segment dock's model choice (``"built-in nuclei"``, ``"trained: <name>"``,
        ``"model file"``).
    model_ref : str or UNet or None
        The model itself: a built-in name, a model file path, or a trained model.
    model_name : str
        A short name for messages and new model names.
    produced : ndarray or None
        The labels as produced (None for dask/zarr-backed results: too large to copy).
    edited : bool
        Whether a paint/fill/erase stroke changed the layer since.
    """

    image_name: str
    model_source: str
    model_ref: Any
    model_name: str
    produced: np.ndarray | None
    edited: bool = False


_RECORDS: dict[Any, ResultRecord] = {}
_WATCHED: set[Any] = set()


def record_result(layer: Any, record: ResultRecord) -> None:
    """Remember how ``layer`` was produced (replacing an earlier record) and watch its edits."""
    key = layer.unique_id
    _RECORDS[key] = record
    if key not in _WATCHED:
        _WATCHED.add(key)
        layer.events.paint.connect(lambda _event=None: _mark_edited(key))


def _mark_edited(key: Any) -> None:
    record = _RECORDS.get(key)
    if record is not None:
        record.edited = True


def result_record(layer: Any) -> ResultRecord | None:
    """The record of ``layer``, or None when no Segment dock produced it."""
    return _RECORDS.get(getattr(layer, "unique_id", None))


def forget(layer: Any) -> None:
    """Drop the record of a removed layer (and its copy of the labels)."""
    _RECORDS.pop(getattr(layer, "unique_id", None), None)


def was_edited(layer: Any) -> bool:
    """Whether the user changed ``layer``'s labels since a Segment dock wrote them."""
    record = result_record(layer)
    if record is None or not record.edited:
        return False
    if record.produced is None or not isinstance(layer.data, np.ndarray):
        return True
    return bool(np.any(np.asarray(layer.data) != record.produced))


def corrected_mask(layer: Any) -> np.ndarray | None:
    """Pixels the user changed since the layer was produced (None when unknown)."""
    record = result_record(layer)
    if record is None or record.produced is None:
        return None
    data = np.asarray(layer.data)
    if data.shape != record.produced.shape:
        return None
    return data != record.produced


def corrected_results(viewer: Any) -> list[Any]:
    """The viewer's Labels layers that a Segment dock produced and the user has edited."""
    return [layer for layer in viewer.layers if was_edited(layer)]
