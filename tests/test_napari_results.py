"""The docks as napari opens them (through the proxy viewer napari hands plugins): results
update in place, edited labels are not overwritten without asking, Evaluate keeps its choices,
failures reach the user as notifications, trained models reach docks opened later."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari import _model_registry as registry
from napari_unet._napari.segment.segment_widget import FROM_FILE, TRAINED

PLUGIN = "napari-unet"
TIMEOUT_MS = 60_000


def _image(shape=(64, 80), seed=0):
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def _dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _segment(widget, qtbot):
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


@pytest.fixture
def segment(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="nuclei")
    widget = _dock(viewer, "U-Net Segment")
    assert type(widget._viewer).__name__ == "PublicOnlyProxy"  # what plugins get in napari
    widget.model_source.value = FROM_FILE
    widget.model_file.value = tiny_model_file
    widget.output.value = "semantic"  # the untrained tiny model gives some labels
    return viewer, widget


@pytest.fixture
def notifications(monkeypatch):
    """The error notifications shown, as text."""
    import napari.utils.notifications as notes

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_error", shown.append)
    return shown


def test_rerun_updates_the_result_layers_in_place_and_evaluate_keeps_its_choices(segment, qtbot):
    viewer, widget = segment
    widget.probabilities.value = True
    _segment(widget, qtbot)
    labels = viewer.layers["nuclei labels"]
    viewer.add_labels(np.asarray(labels.data).copy(), name="truth")
    viewer.layers.move(viewer.layers.index("nuclei labels"), 0)  # the user reorders
    labels.opacity, labels.contour = 0.3, 1
    evaluate = _dock(viewer, "U-Net Evaluate")
    evaluate.prediction.value = viewer.layers["nuclei labels"]
    evaluate.ground_truth.value = viewer.layers["truth"]
    assert evaluate.run() is not None
    qtbot.waitUntil(lambda: not evaluate.running, timeout=TIMEOUT_MS)
    errors_id = evaluate.error_layer.unique_id
    before = [layer.name for layer in viewer.layers]

    viewer.layers["nuclei"].data = _image(seed=1)
    _segment(widget, qtbot)
    after = viewer.layers["nuclei labels"]
    assert after.unique_id == labels.unique_id  # the same layer object ...
    assert [layer.name for layer in viewer.layers] == before  # ... at the same position
    assert (after.opacity, after.contour) == (0.3, 1)
    assert evaluate.prediction.value.name == "nuclei labels"  # the choices survive
    assert evaluate.ground_truth.value.name == "truth"
    assert evaluate.run() is not None
    qtbot.waitUntil(lambda: not evaluate.running, timeout=TIMEOUT_MS)
    assert evaluate.status.value.startswith("done")
    assert evaluate.error_layer.unique_id == errors_id


def test_edited_labels_are_replaced_only_when_the_user_says_so(segment, qtbot):
    viewer, widget = segment
    _segment(widget, qtbot)
    labels = viewer.layers["nuclei labels"]
    asked: list[str] = []
    widget.confirm_replace = lambda name: asked.append(name) or False
    _segment(widget, qtbot)  # not edited: replaced without asking
    assert asked == []

    labels.paint((10, 10), 42)  # the user paints a correction
    edited = np.asarray(labels.data).copy()
    _segment(widget, qtbot)
    assert asked == ["nuclei labels"]
    np.testing.assert_array_equal(labels.data, edited)  # kept ...
    assert "nuclei labels (new)" in viewer.layers  # ... and the result written beside it

    widget.confirm_replace = lambda name: asked.append(name) or True
    _segment(widget, qtbot)
    assert asked == ["nuclei labels", "nuclei labels"]
    assert viewer.layers["nuclei labels"].unique_id == labels.unique_id
    assert not np.array_equal(labels.data, edited)


def test_a_failing_job_is_a_notification_in_plain_words(segment, qtbot, tmp_path, notifications):
    viewer, widget = segment
    bad = tmp_path / "notes.safetensors"
    bad.write_bytes(b"\xff" * 64)  # not a model file
    widget.model_file.value = bad
    _segment(widget, qtbot)
    assert widget.status.value.startswith("error")
    assert len(notifications) == 1 and "U-Net Segment" in notifications[0]
    assert "model file" in notifications[0]
    assert "nuclei labels" not in viewer.layers


def test_removed_image_layer_gives_a_warning(segment, qtbot, monkeypatch):
    import napari.utils.notifications as notes

    warned: list[str] = []
    monkeypatch.setattr(notes, "show_warning", warned.append)
    viewer, widget = segment
    assert widget.run() is not None
    viewer.layers.remove("nuclei")
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert any("was removed" in w for w in warned)


def test_csv_export_with_an_empty_file_field_says_what_to_do(
    make_napari_viewer, qtbot, notifications
):
    viewer = make_napari_viewer()
    truth = np.zeros((20, 20), np.uint16)
    truth[2:8, 2:8] = 1
    viewer.add_labels(truth, name="truth")
    viewer.add_labels(truth.copy(), name="pred")
    widget = _dock(viewer, "U-Net Evaluate")
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    widget.csv_file.value = ""
    widget.export_button.clicked.emit(True)  # what a click does; must not raise
    assert "choose a CSV file" in widget.status.value
    assert len(notifications) == 1


def test_a_dock_opened_after_training_offers_the_trained_model(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    registry.register_model("my nuclei", tiny_model)
    try:
        widget = _dock(viewer, "U-Net Segment")
        assert widget.model_source.value == TRAINED + "my nuclei"
        assert registry.unique_name("my nuclei") == "my nuclei 2"
    finally:
        registry.clear_models()


def test_correct_and_retrain_offers_the_fine_tuned_model_in_every_segment_dock(
    segment, qtbot, make_napari_viewer, monkeypatch
):
    import napari.utils.notifications as notes

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_info", shown.append)
    from napari_unet._napari.segment._retrain import correction_region

    viewer, widget = segment
    other = _dock(viewer, "U-Net Segment")  # a second Segment dock
    widget.output.value = "instance"
    assert widget.retrain.run() is None  # nothing segmented yet
    assert "segment an image first" in widget.retrain.status.value
    _segment(widget, qtbot)
    labels = viewer.layers["nuclei labels"]
    assert widget.retrain.result.value.name == "nuclei labels"
    assert widget.retrain.run() is None  # not corrected yet
    assert "paint corrections" in widget.retrain.status.value

    labels.paint((20, 20), 7)  # the user draws an object (brush of 10 px)
    changed = labels.data != 0
    region = correction_region(np.asarray(labels.data), changed)
    assert region is not None and region[20, 20] and not region[60, 75]  # sparse: local
    widget.retrain.epochs.value = 1
    try:
        worker = widget.retrain.run()
        assert worker is not None and not widget.retrain.retrain_button.enabled
        assert "a strip of it held back" in widget.retrain.status.value
        qtbot.waitUntil(lambda: not widget.retrain.running, timeout=120_000)
        assert widget.retrain.model is not None, widget.retrain.status.value
        name = widget.retrain.model_name
        assert name == "tiny corrected"
        assert registry.get_model(name) is widget.retrain.model
        # offered in every Segment dock, used in none: one sparsely corrected image, so no
        # strip of it holds a corrected object to judge by: nothing held back
        for dock in (widget, other):
            assert TRAINED + name in dock.model_source.choices
            assert dock.model_source.value == FROM_FILE
        assert widget.retrain.scores.n_images == 0 and not widget.retrain.scores.beats
        said = widget.retrain.status.value
        assert "kept 'tiny': no image was held back" in said, said
        assert "pick it in Model to use it" in said
        assert shown and shown[-1] == said  # and a notification says the same
        assert widget.retrain.model.card["name"] == name
        widget.model_source.value = TRAINED + name  # the user picks it
        widget.confirm_replace = lambda name: True
        _segment(widget, qtbot)  # segment again with the new model
        assert widget.status.value.startswith("done")
    finally:
        registry.clear_models()
