"""The list of (image, labels[, region]) layer pairs of the Train widget.

Each row picks an Image layer, the Labels layer annotating it and, optionally, a Labels or
Shapes layer marking where the annotation is valid (sparse annotation). The choices follow the
viewer's layers (added, removed, renamed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton

from .._dock import compact_combos
from ._train_inputs import PairSource

if TYPE_CHECKING:
    import napari


class PairRow(Container):
    """One row: image, labels and optional region layer, and a remove button."""

    def __init__(self, viewer: napari.viewer.Viewer, on_remove) -> None:
        self.image_combo = ComboBox(choices=_choices(viewer, "Image"), tooltip="image layer")
        self.labels_combo = ComboBox(
            choices=_choices(viewer, "Labels"), tooltip="labels layer annotating the image"
        )
        self.region_combo = ComboBox(
            choices=_choices(viewer, "Labels", "Shapes"),
            nullable=True,
            tooltip="optional: where the annotation is valid (non-zero labels or shapes); "
            "empty = the whole image is annotated",
        )
        remove = PushButton(text="x", tooltip="remove this pair")
        remove.max_width = 28
        super().__init__(
            layout="horizontal",
            labels=False,
            widgets=[self.image_combo, self.labels_combo, self.region_combo, remove],
        )
        self.margins = (0, 0, 0, 0)
        compact_combos(self.native, chars=5)
        remove.changed.connect(lambda: on_remove(self))

    def source(self) -> PairSource | None:
        """The row as arrays (GUI thread), or None when the image or labels is not chosen."""
        image, labels, region = (
            self.image_combo.value,
            self.labels_combo.value,
            self.region_combo.value,
        )
        if image is None or labels is None:
            return None
        return PairSource(
            image_name=image.name,
            labels_name=labels.name,
            image=_level0(image.data),
            labels=_level0(labels.data),
            region=None if region is None else _region_array(region, labels),
            rgb=bool(getattr(image, "rgb", False)),
        )


class LayerPairs(Container):
    """Rows of layer pairs with Add and per-row remove buttons."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        header = Container(
            layout="horizontal",
            labels=False,
            widgets=[Label(value="image"), Label(value="labels"), Label(value="region (optional)")],
        )
        header.margins = (0, 0, 0, 0)
        self._add = PushButton(text="Add pair")
        super().__init__(labels=False, widgets=[header, self._add])
        self.margins = (0, 0, 0, 0)
        self._viewer = viewer
        self.rows: list[PairRow] = []
        self._add.changed.connect(self.add_row)
        self.add_row()
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._on_layers_changed)
        for layer in viewer.layers:
            layer.events.name.connect(self._refresh)

    def add_row(self) -> PairRow:
        """Append a row; its choices default to the layers no other row uses yet."""
        row = PairRow(self._viewer, self.remove_row)
        self.insert(len(self) - 1, row)
        self.rows.append(row)
        for attr in ("image_combo", "labels_combo"):
            combo = getattr(row, attr)
            used = {id(getattr(r, attr).value) for r in self.rows[:-1]}
            free = [c for c in combo.choices if id(c) not in used]
            if free:
                combo.value = free[0]
        return row

    def remove_row(self, row: PairRow) -> None:
        self.rows.remove(row)
        self.remove(row)

    def sources(self) -> list[PairSource]:
        """The complete rows as :class:`PairSource` (GUI thread)."""
        return [s for s in (row.source() for row in self.rows) if s is not None]

    def _on_layers_changed(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if getattr(event, "type", "") == "inserted" and layer is not None:
            layer.events.name.connect(self._refresh)
        self._refresh()

    def _refresh(self, event=None) -> None:
        self.reset_choices()


def _choices(viewer: napari.viewer.Viewer, *kinds: str):
    """A choices callable: (name, layer) of the viewer's layers of these kinds."""

    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if _kind(layer) in kinds]

    return choices


def _kind(layer: Any) -> str:
    return type(layer).__name__


def _level0(data: Any) -> Any:
    """The full-resolution array of a (possibly multiscale) layer's data."""
    if isinstance(data, (list, tuple)) or type(data).__name__ == "MultiScaleData":
        return data[0]
    return data


def _region_array(region: Any, labels: Any) -> Any:
    """A region layer as a mask of the labels' shape (Shapes are rasterised)."""
    if _kind(region) == "Shapes":
        shape = tuple(labels.data.shape)
        return (
            region.to_labels(labels_shape=shape) > 0 if len(region.data) else np.zeros(shape, bool)
        )
    return _level0(region.data)
