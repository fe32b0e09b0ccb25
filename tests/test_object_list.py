"""*Where to correct first* in the Segment dock: features on the layer, least confident first,
a click centres the viewer on the object and selects it, CSV export."""

from __future__ import annotations

import csv

import numpy as np
import tifffile

from napari_unet._napari.segment._object_list import camera
from napari_unet._napari.segment.segment_widget import BUILTIN, SegmentWidget
from napari_unet.common.sample import sample_paths
from napari_unet.inference.labels.objects import COLUMNS

TIMEOUT_MS = 120_000


def _click_row(qtbot, table_widget, row: int) -> None:
    """A real mouse click on the first cell of ``row``."""
    from qtpy.QtCore import Qt

    native = table_widget.native
    rect = native.visualItemRect(native.item(row, 0))
    qtbot.mouseClick(native.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_segment_result_lists_least_confident_objects_and_a_click_jumps(
    make_napari_viewer, qtbot, tmp_path
):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.model_source.value = BUILTIN  # not a model an earlier test chose in this process
    qtbot.addWidget(widget.native)
    widget.native.show()
    crop = tifffile.imread(sample_paths()[0])[:128, :160]
    viewer.add_image(crop, name="nuclei", scale=(0.5, 0.5), translate=(10.0, 20.0))
    widget.auto_size.value = False  # the sample's nuclei have the model's size
    assert not widget.objects.visible  # nothing to list before a result
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.value.startswith("done"), widget.status.value

    layer = viewer.layers["nuclei labels"]
    features = layer.features
    ids = np.unique(layer.data)
    ids = ids[ids != 0]
    assert len(ids) > 5
    assert set(COLUMNS) <= set(features.columns)
    assert sorted(features["label"]) == ids.tolist() and len(features) == len(ids)
    assert (features["index"] == features["label"]).all()  # napari's label -> row
    assert features["confidence"].between(0, 1).all()

    listed = widget.objects.list
    assert widget.objects.visible
    first_label = int(listed.native.item(0, 0).text())
    least = features.loc[features["confidence"].idxmin()]
    assert first_label == int(least["label"])
    confidences = [float(listed.native.item(r, 1).text()) for r in range(listed.native.rowCount())]
    assert confidences == sorted(confidences)

    before = tuple(camera(viewer).center)
    _click_row(qtbot, listed, 0)
    expected = (10.0 + 0.5 * least["centroid_y"], 20.0 + 0.5 * least["centroid_x"])
    np.testing.assert_allclose(camera(viewer).center[-2:], expected, atol=1e-6)
    assert tuple(camera(viewer).center) != before
    assert layer.selected_label == first_label

    path = widget.objects.export_csv(tmp_path / "objects")  # .csv is added
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert path.suffix == ".csv" and list(rows[0]) == list(COLUMNS)
    assert len(rows) == len(ids)


def test_a_click_on_a_3d_object_moves_the_z_slider(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    labels = np.zeros((10, 30, 30), np.int32)
    labels[6:9, 4:8, 20:26] = 5  # centroid (7, 5.5, 22.5)
    labels[1:3, 10:20, 10:20] = 2
    layer = viewer.add_labels(labels, name="cells labels", scale=(2.0, 1.0, 1.0))
    table = {
        "label": np.array([2, 5]), "area": np.array([200, 72]),
        "centroid_z": np.array([1.5, 7.0]), "centroid_y": np.array([14.5, 5.5]),
        "centroid_x": np.array([14.5, 22.5]), "mean_intensity": np.array([1.0, 2.0]),
        "confidence": np.array([0.9, 0.4]),
    }  # fmt: skip
    widget.objects.show_table(layer, table, "ZYX")
    assert int(widget.objects.list.native.item(0, 0).text()) == 5  # least confident first
    widget.objects.list.native.cellClicked.emit(0, 1)
    assert viewer.dims.point[0] == 14.0  # z = 7 at a z step of 2
    np.testing.assert_allclose(camera(viewer).center[-2:], (5.5, 22.5))
    assert layer.selected_label == 5

    widget.objects.show_table(layer, None, "ZYX")  # a result without a table
    assert not widget.objects.visible and layer.features.shape[1] == 0
