"""The three docks fit a 1366x768 screen: they scroll, keep expert settings in a collapsed
Advanced section, and a long status text wraps instead of widening the dock."""

from __future__ import annotations

import pytest
from magicgui.widgets import SpinBox

from napari_unet._napari._dock import MAX_DOCK_HEIGHT, Advanced

PLUGIN = "napari-unet"
WIDGETS = ("U-Net Segment", "U-Net Train", "U-Net Evaluate")
#: the first settings a biologist needs, and settings that belong under Advanced
UP_FRONT = {
    "U-Net Segment": ("image", "model_source", "auto_size", "run_button"),
    "U-Net Train": ("pairs", "start_button", "model_name"),
    "U-Net Evaluate": ("prediction", "ground_truth", "run_button", "table"),
}
ADVANCED = {
    "U-Net Segment": ("tile", "overlap", "device", "axes"),
    "U-Net Train": ("architecture", "hyper"),
    "U-Net Evaluate": ("iou_threshold", "ap_thresholds", "region", "axis"),
}


def _shown(widget) -> bool:
    """Whether ``widget`` would be visible (no hidden ancestor up to the dock)."""
    native = widget.native
    while native is not None:
        if native.isHidden():
            return False
        native = native.parentWidget()
    return True


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    return viewer


@pytest.mark.parametrize("name", WIDGETS)
def test_dock_fits_a_laptop_screen_and_hides_expert_settings(viewer, qtbot, name):
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    qtbot.wait(10)
    assert dock.minimumSizeHint().height() <= MAX_DOCK_HEIGHT
    assert widget.native.minimumSizeHint().height() <= MAX_DOCK_HEIGHT
    # the dock holds a scroll area: taller content scrolls instead of growing the window
    assert type(widget.native).__name__ == "QScrollArea"
    assert not widget.advanced.expanded
    assert all(_shown(getattr(widget, attr)) for attr in UP_FRONT[name])
    assert not any(_shown(getattr(widget, attr)) for attr in ADVANCED[name])
    widget.advanced.toggle.changed.emit(True)  # what a click does
    assert widget.advanced.expanded
    assert all(_shown(getattr(widget, attr)) for attr in ADVANCED[name])
    assert dock.minimumSizeHint().height() <= MAX_DOCK_HEIGHT


@pytest.mark.parametrize("name", WIDGETS)
def test_long_status_text_wraps_instead_of_widening_the_dock(viewer, qtbot, name):
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    qtbot.wait(10)
    before = dock.minimumSizeHint().width()
    widget.status.value = "error: " + "a long technical message " * 80
    qtbot.wait(10)
    assert widget.status.native.wordWrap()
    assert dock.minimumSizeHint().width() == before


def test_other_features_add_rows_to_advanced(qtbot):
    section = Advanced()
    batch = SpinBox(label="Batch size", value=4)
    section.add(batch)
    assert batch in section.rows and not section.expanded
    section.set_expanded(True)
    assert section.expanded and section.toggle.text.startswith("\u25bc")


# -- all three docks open together (issue 30) -------------------------------------------------
#: the buttons and status lines each dock must show, unclipped, when its tab is raised
PRIMARY = {
    "U-Net Segment": ("run_button", "cancel_button", "status", "outlines"),
    "U-Net Train": ("start_button", "stop_button", "status", "save_path", "save_button"),
    "U-Net Evaluate": ("run_button", "cancel_button", "status", "export_button", "legend"),
}
#: status lines as long as a finished run's (two or three lines at the dock's width)
AFTER_A_RUN = {
    "U-Net Segment": "done: 113 objects in (260, 347) (objects ~23 px, not resampled)\n"
    "input: axes YX (from the layer), grey, not inverted, model built-in nuclei",
    "U-Net Train": "epoch 20/20: train loss 0.1234, validation loss 0.2345, validation Dice "
    "0.8765 (best)",
    "U-Net Evaluate": "done: object F1 0.851, AP@0.50 0.741, mean AP 0.333, pixel Dice 0.864",
}


def _clipping(widget, dock) -> str:
    """Why ``widget`` is not fully on screen in its raised ``dock`` ("" when it is)."""
    from qtpy.QtCore import QPoint, QRect

    native = widget.native
    if not native.isVisible():
        return "hidden"
    if native.width() < 8 or native.height() < 8:
        return f"squeezed to {native.width()}x{native.height()}"
    viewport = native.window()
    scroll = native.parentWidget()
    while scroll is not None and type(scroll).__name__ != "QScrollArea":
        scroll = scroll.parentWidget()
    viewport = scroll.viewport()
    rect = QRect(native.mapTo(viewport, QPoint(0, 0)), native.size())
    if not viewport.rect().contains(rect):
        return f"{rect.getRect()} outside the dock's visible {viewport.rect().getRect()}"
    window = dock.window()
    on_window = QRect(native.mapTo(window, QPoint(0, 0)), native.size())
    if not window.rect().contains(on_window):
        return f"{on_window.getRect()} outside the window {window.rect().getRect()}"
    return ""


def test_all_three_docks_open_on_a_laptop_show_every_primary_control(viewer, qtbot):
    window = viewer.window._qt_window
    viewer.open_sample(PLUGIN, "nuclei")  # layers in every combo box, as in real use
    docks = {}
    for name in ("U-Net Segment", "U-Net Evaluate", "U-Net Train"):  # the order of the issue
        docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        qtbot.wait(20)
    assert (window.width(), window.height()) == (1366, 768)
    # one tab group: each dock gets the whole height instead of a third of it
    for dock, _ in docks.values():
        others = {d for d, _ in docks.values()} - {dock}
        assert others <= set(window.tabifiedDockWidgets(dock))
    assert docks["U-Net Train"][0].visibleRegion().boundingRect().height() > 600  # newest: raised
    problems = {}
    for name, (dock, widget) in docks.items():
        widget.status.value = AFTER_A_RUN[name]
        dock.raise_()  # what clicking its tab does
        qtbot.wait(50)
        assert dock.height() >= 600
        widget.native.verticalScrollBar().setValue(0)
        qtbot.wait(10)
        for attr in PRIMARY[name]:
            why = _clipping(getattr(widget, attr), dock)
            if why:
                problems[f"{name}.{attr}"] = why
        # nothing is cut off on the right: the rows fit the dock's width
        assert widget.inner.minimumSizeHint().width() <= widget.native.viewport().width()
    assert problems == {}


def test_a_dock_of_another_plugin_is_left_where_napari_puts_it(viewer, qtbot):
    from qtpy.QtWidgets import QLabel

    other = viewer.window.add_dock_widget(QLabel("another plugin"), name="other", area="right")
    dock, _ = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Evaluate")
    qtbot.wait(20)
    window = viewer.window._qt_window
    assert other not in window.tabifiedDockWidgets(dock)
    segment, _ = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Segment")
    qtbot.wait(20)
    assert window.tabifiedDockWidgets(segment) == [dock]


def test_rows_added_later_widen_the_dock_instead_of_being_cut(viewer, qtbot):
    from magicgui.widgets import PushButton

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Evaluate")
    qtbot.wait(20)
    before = widget.native.minimumWidth()
    wide = PushButton(text="a very wide button " * 6)
    widget.append(wide)
    qtbot.wait(20)
    assert widget.native.minimumWidth() > before
    assert widget.inner.minimumSizeHint().width() <= widget.native.viewport().width()
    assert wide.native.width() >= wide.native.sizeHint().width()


def test_train_keeps_save_in_view_after_a_run_with_a_roomy_file_field(viewer, qtbot):
    viewer.open_sample(PLUGIN, "nuclei")
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Train")
    widget.status.value = AFTER_A_RUN["U-Net Train"]
    widget.monitor.note.value = (
        "validation reuses the training image: only one annotated image (hold one back for "
        "an honest score)"
    )
    widget.message.value = (
        "done: best epoch 18, validation Dice 0.877 (on the training image). U-Net Segment: "
        "'nuclei U-Net' is offered in U-Net Segment's Model box; the built-in nuclei model "
        "stays in use (it scored higher on the held-back images)."
    )
    qtbot.wait(50)
    for attr in ("save_path", "save_button", "export_button", "message"):
        assert _clipping(getattr(widget, attr), dock) == "", attr
    # the model-file field has a row of its own: most of the dock's width
    assert widget.save_path.native.width() >= 0.6 * widget.native.viewport().width()
