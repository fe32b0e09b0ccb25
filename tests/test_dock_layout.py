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
