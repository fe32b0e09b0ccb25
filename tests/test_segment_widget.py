"""The U-Net Segment widget in a real viewer: layers, placement, re-run, Cancel, errors."""

from __future__ import annotations

import subprocess
import sys
import time

import dask.array as da
import numpy as np
import pytest

from napari_unet._napari.segment.segment_widget import FROM_FILE, SegmentWidget

TIMEOUT_MS = 60_000


@pytest.fixture
def widget(make_napari_viewer, tiny_model_file):
    """A Segment widget in a viewer, set to the tiny model file."""
    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    w.model_source.value = FROM_FILE
    w.model_file.value = tiny_model_file
    return w


def _image(shape=(64, 80), seed=0):
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def _run_to_end(widget, qtbot):
    worker = widget.run()
    assert worker is not None
    # not waitSignal: a fast worker may finish before a late connection sees the signal
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    return worker


def test_run_adds_labels_with_the_image_placement_and_rerun_updates(widget, qtbot):
    viewer = widget._viewer
    viewer.add_image(_image(), name="nuclei", scale=(0.5, 0.25), translate=(10.0, 20.0))
    viewer.layers["nuclei"].axis_labels = ("y", "x")
    assert widget.image.value is viewer.layers["nuclei"]
    assert widget.axes.value == "YX"
    widget.output.value = "semantic"
    _run_to_end(widget, qtbot)
    labels = viewer.layers["nuclei labels"]
    assert type(labels).__name__ == "Labels"
    assert labels.data.shape == (64, 80)
    np.testing.assert_allclose(labels.scale, (0.5, 0.25))
    np.testing.assert_allclose(labels.translate, (10.0, 20.0))
    assert tuple(labels.axis_labels) == ("y", "x")
    assert widget.status.value.startswith("done")

    viewer.layers["nuclei"].data = _image(seed=1)
    widget.probabilities.value = True
    _run_to_end(widget, qtbot)
    names = [layer.name for layer in viewer.layers]
    assert names.count("nuclei labels") == 1
    assert viewer.layers["nuclei labels"] is labels  # updated, not stacked
    probs = viewer.layers["nuclei probabilities"]
    assert probs.data.shape == (3, 64, 80)
    np.testing.assert_allclose(probs.data.sum(axis=0), 1.0, atol=1e-5)
    expected = np.argmax(probs.data, axis=0)
    np.testing.assert_array_equal(labels.data, expected)


def test_time_series_and_rgb_layers(make_napari_viewer, qtbot, tmp_path):
    from napari_unet import UNet, save_model

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    rgb_model = save_model(UNet(3, 3, depth=2, base_filters=4), tmp_path / "rgb.safetensors")
    widget.model_source.value = FROM_FILE
    widget.model_file.value = rgb_model
    viewer.add_image(np.stack([_image(seed=i) for i in range(3)], axis=-1), name="he", rgb=True)
    assert widget.axes.value == "YXC"
    _run_to_end(widget, qtbot)
    assert viewer.layers["he labels"].data.shape == (64, 80)

    widget.model_file.value = widget.model_file.value.parent / "missing.safetensors"
    viewer.add_image(np.stack([_image(seed=i) for i in range(2)]), name="movie", scale=(1, 2, 3))
    viewer.layers["movie"].axis_labels = ("t", "y", "x")
    widget.image.value = viewer.layers["movie"]
    assert widget.axes.value == "TYX"
    assert widget.run() is None  # no model file: refused before any work
    assert "not a file" in widget.status.value


def test_dask_layer_gives_a_zarr_backed_labels_layer(widget, qtbot):
    viewer = widget._viewer
    viewer.add_image(da.from_array(_image((96, 96)), chunks=(48, 48)), name="big")
    _run_to_end(widget, qtbot)
    labels = viewer.layers["big labels"].data
    assert isinstance(labels, da.Array)
    assert "from-zarr" in labels.name
    assert labels.shape == (96, 96)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.full((32, 32), np.nan, np.float32), "NaN"),
        # axes CYX, no channel chosen, a 1-channel model: the channels are listed
        (np.zeros((3, 32, 32), np.uint8), "3 channels"),
    ],
)
def test_bad_inputs_report_an_error_and_add_no_layer(widget, qtbot, data, message):
    viewer = widget._viewer
    viewer.add_image(data, name="bad")
    widget.axes.value = "CYX" if data.ndim == 3 else "YX"
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.value.startswith("error")
    assert message in widget.status.value
    assert "bad labels" not in viewer.layers


def test_cancel_stops_within_a_batch_and_adds_nothing(widget, qtbot):
    viewer = widget._viewer
    viewer.add_image(_image((1024, 1024)), name="large")  # ~1800 tiles in ~8 batches
    widget.tile.value = 32
    widget.overlap.value = 8
    widget.engine.value = "torch"  # the first events are tiles, not an engine's preparation
    from qtpy.QtCore import Qt

    events = []
    worker = widget.run()
    # a direct connection records progress in the worker thread as it happens, not when the
    # GUI thread gets round to the queued events
    worker.yielded.connect(events.append, Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: len(events) >= 1, timeout=TIMEOUT_MS)
    widget.cancel()
    done_at_cancel = events[-1].done
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    total = events[0].total
    batch = events[0].done
    assert total > 4 * batch
    # stopped within one batch of the Cancel (the batch in flight may still finish)
    assert events[-1].done <= done_at_cancel + batch < total
    assert "large labels" not in viewer.layers
    assert widget.status.value == "cancelled"
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_event_loop_keeps_running_during_a_run(widget, qtbot):
    from qtpy.QtCore import QTimer

    viewer = widget._viewer
    viewer.add_image(_image((768, 768)), name="ticks")  # 144 tiles: long enough to tick
    widget.tile.value = 64
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    start = time.perf_counter()
    _run_to_end(widget, qtbot)
    end = time.perf_counter()
    timer.stop()
    during = [t for t in ticks if start <= t <= end]
    gaps = np.diff([start, *during, end])
    print(f"run {end - start:.2f} s, {len(during)} ticks, longest gap {gaps.max():.3f} s")
    assert "ticks labels" in viewer.layers
    # the GUI thread kept serving its timer throughout (timings: see the printed gap)
    assert len(during) >= 2


def test_importing_the_widget_does_not_import_torch():
    code = (
        "import sys, napari_unet._napari.segment.segment_widget as w; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_a_model_trained_in_this_session_is_offered_selected_and_used(widget, qtbot):
    from napari_unet import UNet, segment
    from napari_unet._napari import _model_registry as registry

    model = UNet(1, 3, depth=2, base_filters=4).eval()
    model.card = {"task": "instance"}
    try:
        registry.register_model("my nuclei", model)
        assert "trained: my nuclei" in widget.model_source.choices
        assert widget.model_source.value == "trained: my nuclei"
        viewer = widget._viewer
        image = _image()
        viewer.add_image(image, name="cells")
        widget.output.value = "semantic"
        _run_to_end(widget, qtbot)
        expected = segment(image, model, axes="YX", output="semantic")
        np.testing.assert_array_equal(viewer.layers["cells labels"].data, expected)
    finally:
        registry.clear_models()
    assert "trained: my nuclei" not in widget.model_source.choices


def test_diameter_resamples_and_returns_labels_at_the_image_size(widget, qtbot):
    viewer = widget._viewer
    viewer.add_image(_image((64, 80)), name="big nuclei")
    widget.output.value = "semantic"
    assert widget.auto_size.value and not widget.diameter.enabled  # auto by default
    widget.auto_size.value = False
    assert widget.diameter.enabled
    widget.diameter.value = 40.0  # the tiny model's card records no object_diameter
    _run_to_end(widget, qtbot)
    assert "big nuclei labels" not in [layer.name for layer in viewer.layers]
    assert "object_diameter" in widget.status.value


def test_status_says_when_auto_size_resampled_the_image(make_napari_viewer, qtbot):
    from napari_unet.common.sample import load_sample
    from napari_unet.inference.sizing.rescale import resample

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)  # the built-in model, automatic object size
    image, _ = load_sample()
    big = resample(image[:128, :128], (4.0, 4.0), order=1)  # ~55 px nuclei: beyond 40 px
    viewer.add_image(big, name="zoomed")
    _run_to_end(widget, qtbot)
    assert viewer.layers["zoomed labels"].data.shape == big.shape
    assert widget.status.value.startswith("done:")
    factor = float(widget.status.value.split("resampled x")[1].split()[0])
    assert 0.25 < factor < 0.9
    assert "objects ~" in widget.status.value
    record = viewer.layers["zoomed labels"].metadata["napari_unet"]
    assert record["scale"] == pytest.approx(factor, abs=0.01)
    assert 35 < record["object_diameter"] < 90  # ~55 px nuclei


def test_z_stack_settings_follow_the_layer(widget, qtbot):
    viewer = widget._viewer
    viewer.add_image(_image((64, 80)), name="plane")
    assert widget.z_mode.native.isHidden() and widget.anisotropy.native.isHidden()
    stack = np.stack([_image(seed=i) for i in range(4)])
    viewer.add_image(stack, name="stack", scale=(3, 1, 1), axis_labels=("z", "y", "x"))
    widget.image.value = viewer.layers["stack"]
    assert widget.axes.value == "ZYX"
    assert not widget.z_mode.native.isHidden()
    assert widget.anisotropy.value == pytest.approx(3.0)
    job = widget._job(viewer.layers["stack"])
    assert (job["z_mode"], job["anisotropy"]) == ("3d", pytest.approx(3.0))
    widget.z_mode.value = "slices"
    _run_to_end(widget, qtbot)
    labels = viewer.layers["stack labels"].data
    assert labels.shape == (4, 64, 80)
    ids = [set(np.unique(s)) - {0} for s in labels]
    assert sum(map(len, ids)) == len(set().union(*ids))  # no id in two slices


def test_time_series_of_stacks_say_ids_are_per_time_point(widget, qtbot):
    viewer = widget._viewer
    movie = np.stack([np.stack([_image((32, 40), seed=i)] * 3) for i in range(2)])
    viewer.add_image(movie, name="movie")
    widget.axes.value = "TZYX"
    widget.z_mode.value = "stitch"
    _run_to_end(widget, qtbot)
    assert viewer.layers["movie labels"].data.shape == movie.shape
    assert "own ids" in widget.status.value
