"""*Where to correct first*: a Segment result's objects, least confident first; a click jumps.

The engine measures every object of a result
(:func:`napari_unet.inference.labels.objects.object_table`: label, area, centroid, mean
intensity, confidence); :class:`ObjectList` puts that table into the Labels layer's
``features`` (with napari's ``index`` column, so hovering an object shows its row), lists the
:data:`MAX_ROWS` least confident objects (about ten rows visible, the list scrolls), centres
the viewer on the object of a clicked row and selects its label, and exports
the whole table as CSV.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container, FileEdit, PushButton, Table

from .._dock import header, wrapping_label
from .._feedback import report_error

#: the most objects listed (the CSV export has them all)
MAX_ROWS = 200
#: rows visible before the list scrolls
VISIBLE_ROWS = 10


class ObjectList(Container):
    """The objects of the last Segment result, least confident first.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where a click centres the camera.
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self.layer: Any = None  # the Labels layer the table describes
        self.table: dict[str, np.ndarray] | None = None
        self._axes = ""  # the letters of the layer's data axes
        self._rows = np.zeros(0, np.int64)  # the table row of each listed row
        self.caption = wrapping_label()
        self.list = Table(value=[])
        self.csv_file = FileEdit(label="CSV file", mode="w", filter="*.csv")
        self.export_button = PushButton(text="Export CSV")
        super().__init__(
            labels=False,
            widgets=[
                header("Where to correct first"),
                self.caption,
                self.list,
                Container(layout="horizontal", widgets=[self.csv_file, self.export_button]),
            ],
        )
        self.margins = (0, 0, 0, 0)
        self._set_up_list()
        self.export_button.clicked.connect(self._export_clicked)
        self.visible = False

    def _set_up_list(self) -> None:
        from qtpy.QtWidgets import QAbstractItemView

        native = self.list.native
        native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        native.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        native.verticalHeader().setVisible(False)
        row = native.verticalHeader().defaultSectionSize()
        native.setMaximumHeight(row * (VISIBLE_ROWS + 1) + 4)
        native.cellClicked.connect(lambda row, _column: self.jump_to(row))

    def show_table(self, layer: Any, table: dict[str, np.ndarray] | None, axes: str) -> None:
        """Describe ``layer`` (a Labels layer with data axes ``axes``) by ``table``.

        ``None`` (no table for this result: a dask image, semantic labels) clears the
        layer's features and hides the list.
        """
        from ...inference.labels.objects import least_confident

        self.layer, self.table, self._axes = layer, table, axes
        if table is None:
            layer.features = {}
            self.visible = False
            return
        layer.features = {"index": np.asarray(table["label"]), **table}
        self._rows = least_confident(table)[:MAX_ROWS]
        n = len(table["label"])
        shown = f"the {self._rows.size} least confident" if self._rows.size < n else "all"
        self.caption.value = (
            f"{n} object(s), {shown} listed, least confident first; click one to go to it"
        )
        self.list.value = {
            "data": [
                [int(table["label"][i]), round(float(table["confidence"][i]), 3)]
                for i in self._rows
            ],
            "index": list(range(1, self._rows.size + 1)),
            "columns": ["label", "confidence"],
        }
        self.visible = True

    def jump_to(self, row: int) -> None:
        """Centre the viewer on the object of list row ``row`` and select its label."""
        layer, table = self.layer, self.table
        if layer is None or table is None or not 0 <= row < self._rows.size:
            return
        if not any(ly is layer for ly in self._viewer.layers):
            return  # the layer was deleted
        i = int(self._rows[row])
        position = [_coordinate(table, letter, i) for letter in self._axes]
        world = np.asarray(layer.data_to_world(position), np.float64)
        dims = self._viewer.dims
        offset = dims.ndim - layer.ndim  # a layer's axes are the viewer's last ones
        for k, value in enumerate(world):
            if offset + k not in dims.displayed:
                dims.set_point(offset + k, value)
        centre = [world[d - offset] for d in dims.displayed if d >= offset]
        camera(self._viewer).center = tuple(centre)
        layer.selected_label = int(table["label"][i])

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Write the whole table (one row per object, label order) to ``path``, atomically."""
        from ...common.errors import UserInputError
        from ...inference.labels.objects import write_csv

        if self.table is None:
            raise UserInputError("no object table yet: segment an image first")
        target = Path(path).expanduser()
        if str(path).strip() in ("", ".") or target.is_dir():
            raise UserInputError("choose a CSV file to write to (…/objects.csv) in CSV file")
        if target.suffix.lower() != ".csv":
            target = target.with_suffix(".csv")
        written = write_csv(self.table, target)
        self.caption.value = f"wrote {written}"
        return written

    def _export_clicked(self, *_: Any) -> None:
        """The Export button: write the CSV, or say why not (never an uncaught error)."""
        from ...common.errors import UserInputError

        try:
            self.export_csv(self.csv_file.value)
        except (UserInputError, OSError) as err:
            report_error(self.caption, f"could not export the CSV: {err}", "U-Net Segment")


def camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _coordinate(table: dict[str, np.ndarray], letter: str, row: int) -> float:
    """The data coordinate of object ``row`` on the axis ``letter`` (T, Z, Y or X)."""
    key = "t" if letter == "T" else f"centroid_{letter.lower()}"
    return float(table[key][row])
