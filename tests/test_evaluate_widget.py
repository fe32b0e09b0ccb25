"""The U-Net Evaluate widget, driven through its public run() under a real napari viewer."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_unet import metrics
from napari_unet._napari.evaluate._metrics_table import metric_name
from napari_unet._napari.evaluate.evaluate_widget import EvaluateWidget, parse_thresholds


def _stack():
    gt = np.zeros((3, 40, 40), np.uint16)
    gt[:, 2:12, 2:12] = 1  # found in every plane
    gt[:, 20:30, 20:30] = 2  # missed in plane 1
    pred = np.zeros_like(gt)
    pred[:, 2:12, 3:12] = 7  # one column short: pixel FN
    pred[[0, 2], 20:30, 20:30] = 8
    pred[2, 32:38, 2:8] = 9  # false positive object in plane 2
    return gt, pred


def _cell(widget, metric, column):
    """The table value of ``metric`` (a record key; its row shows the readable name) in
    ``column`` (a slice / class / summary)."""
    return widget.table[column][widget.table.row_headers.index(metric_name(metric))]


def _run(widget, qtbot):
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    return worker


def test_widget_evaluates_stack_per_slice(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    gt, pred = _stack()
    gt_layer = viewer.add_labels(gt, name="truth", scale=(2.0, 0.5, 0.5), translate=(0, 10, 10))
    viewer.add_labels(pred, name="pred")
    widget = EvaluateWidget(viewer)
    assert widget.ground_truth.value is gt_layer and widget.prediction.value.name == "pred"
    assert widget.axis.value is None  # Z stacks default to 3D matching in the whole volume
    widget.axis.value = 0  # per slice along Z: the option
    _run(widget, qtbot)

    cols = ["slice 0", "slice 1", "slice 2", "all"]
    assert list(widget.table.column_headers) == cols
    assert [_cell(widget, "tp", c) for c in cols] == [2, 1, 2, 5]
    assert [_cell(widget, "fp", c) for c in cols] == [0, 0, 1, 1]
    assert [_cell(widget, "fn", c) for c in cols] == [0, 1, 0, 1]
    expected = metrics.match_instances(gt[2], pred[2])
    assert _cell(widget, "f1", "slice 2") == round(expected.f1, 3)
    assert _cell(widget, "pixel_dice", "all") == round(metrics.dice(gt, pred), 3)
    assert _cell(widget, "ap@0.50", "all") == round(5 / 7, 3)
    assert widget.records[3]["ap@0.50"] == pytest.approx(5 / 7)

    errors = widget.error_layer
    assert errors is not None and errors.name == "pred errors"
    np.testing.assert_array_equal(errors.scale, gt_layer.scale)
    np.testing.assert_array_equal(errors.translate, gt_layer.translate)
    assert np.all(errors.data[1, 20:30, 20:30] == 2)  # missed object
    assert np.all(errors.data[2, 32:38, 2:8] == 1)  # false positive object
    assert np.all(errors.data[:, 2:12, 2] == 4)  # false negative pixels
    assert set(np.unique(errors.data)) == {0, 1, 2, 4}
    colors = errors.colormap.color_dict
    assert len({tuple(np.round(colors[k], 3)) for k in (1, 2, 3, 4)}) == 4  # distinct colours

    # rerun with another threshold updates the same layer, not a copy
    widget.iou_threshold.value = 0.95
    _run(widget, qtbot)
    assert [ly.name for ly in viewer.layers].count("pred errors") == 1
    assert _cell(widget, "tp", "all") == 2  # object 1 (IoU 0.9) no longer matches at 0.95

    out = widget.export_csv(tmp_path / "scores.csv")
    rows = list(csv.DictReader(out.open()))
    assert [r["slice"] for r in rows] == ["0", "1", "2", "all"]
    assert (
        float(rows[2]["f1"]) == metrics.match_instances(gt[2], pred[2], 0.95).f1
    )  # full precision


def test_widget_region_semantic_and_bad_input(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    gt = np.zeros((20, 20), np.uint8)
    gt[:10] = 1
    gt[10:, :5] = 2
    pred = gt.copy()
    pred[15:, 15:] = 1  # wrong class, outside the region below
    region = np.ones_like(gt)
    region[15:, 15:] = 0
    viewer.add_labels(gt, name="gt")
    viewer.add_labels(pred, name="classes")
    viewer.add_labels(region, name="region")
    widget = EvaluateWidget(viewer)
    widget.ground_truth.value = viewer.layers["gt"]
    widget.prediction.value = viewer.layers["classes"]
    widget.task.value = "semantic"
    _run(widget, qtbot)
    assert list(widget.table.column_headers) == ["class 0", "class 1", "class 2", "macro", "micro"]
    assert _cell(widget, "dice", "micro") < 1.0 and _cell(widget, "support", "class 2") == 50
    assert np.count_nonzero(widget.error_layer.data == 3) == 25

    widget.region.value = viewer.layers["region"]
    _run(widget, qtbot)
    assert [_cell(widget, "dice", c) for c in widget.table.column_headers] == [1.0] * 5

    viewer.add_labels(np.zeros((5, 5), np.uint8), name="small")
    widget.prediction.value = viewer.layers["small"]
    assert widget.run() is None
    assert "shape" in widget.status.value and "(5, 5)" in widget.status.value


def test_parse_thresholds():
    assert parse_thresholds("0.5:0.95:0.05") == metrics.DEFAULT_THRESHOLDS
    assert parse_thresholds("0.5, 0.75") == (0.5, 0.75)


def test_readable_metric_names_and_semantic_on_instance_warning(
    make_napari_viewer, qtbot, monkeypatch
):
    import napari.utils.notifications as notes

    warned: list[str] = []
    monkeypatch.setattr(notes, "show_warning", warned.append)
    viewer = make_napari_viewer()
    gt = np.zeros((60, 60), np.uint16)
    for i in range(25):  # 25 objects: instance labels
        r, c = divmod(i, 5)
        gt[r * 12 : r * 12 + 8, c * 12 : c * 12 + 8] = i + 1
    viewer.add_labels(gt, name="gt")
    viewer.add_labels(gt.copy(), name="pred")
    widget = EvaluateWidget(viewer)
    widget.ground_truth.value, widget.prediction.value = viewer.layers["gt"], viewer.layers["pred"]
    _run(widget, qtbot)
    rows = list(widget.table.row_headers)
    assert "matched objects (TP)" in rows and "AP@0.50" in rows and "mean AP" in rows
    assert "tp" not in rows and "pixel_dice" not in rows
    tooltip = widget.table.native.verticalHeaderItem(rows.index("AP@0.50")).toolTip()
    assert "IoU > 0.50" in tooltip
    # the status names both AP figures; the table's AP@0.50 row is the status's AP@0.50
    assert "AP@0.50 1.000" in widget.status.value and "mean AP 1.000" in widget.status.value
    assert warned == []

    widget.task.value = "semantic"
    _run(widget, qtbot)
    assert len(warned) == 1 and "instance labels" in warned[0]
    assert "Warning" in widget.status.value


def test_time_series_default_to_one_evaluation_per_time_point(make_napari_viewer):
    viewer = make_napari_viewer()
    gt, pred = _stack()
    viewer.add_labels(gt, name="truth")
    viewer.layers["truth"].axis_labels = ("t", "y", "x")
    viewer.add_labels(pred, name="pred")
    widget = EvaluateWidget(viewer)
    widget.ground_truth.value = viewer.layers["truth"]
    widget._on_gt_changed()
    assert widget.axis.value == 0
    viewer.add_labels(np.stack([gt, gt]), name="movie")  # T, Z, Y, X
    widget.axis.value = None
    widget.ground_truth.value = viewer.layers["movie"]
    assert widget.axis.value == 0
