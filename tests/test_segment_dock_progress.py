"""The Segment dock as napari opens it: Cancel stops a large tile's batch part-way, and the
progress bar counts the post-processing steps."""

from __future__ import annotations

import threading
import time

import numpy as np

from napari_unet._napari.segment.segment_widget import FROM_FILE

PLUGIN = "napari-unet"
TIMEOUT_MS = 60_000


def _dock(make_napari_viewer, model_file, image):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="large")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Segment")
    widget.model_source.value = FROM_FILE
    widget.model_file.value = model_file
    widget.auto_size.value = False
    widget.engine.value = "torch"  # the first events are tiles, not an engine's preparation
    return viewer, widget


def _hold_first_batch(monkeypatch):
    """Wrap the engine: the first batch waits (in the worker thread) until ``go`` is set.

    Returns ``(started, go, results)``: ``started`` is set when the first batch is in the
    network; ``results`` gets what each batch returned (``None``: dropped part-way).
    """
    from napari_unet.inference.tiling import predict

    started, go, results = threading.Event(), threading.Event(), []
    runner = predict.engine_runner

    def holding(*args, **kwargs):
        forward = runner(*args, **kwargs)

        def run(x, stop=None):
            if not started.is_set():
                started.set()
                go.wait(TIMEOUT_MS / 1000)  # Cancel is pressed while this batch runs
            results.append(forward(x, stop))
            return results[-1]

        return run

    monkeypatch.setattr(predict, "engine_runner", holding)
    return started, go, results


def test_cancel_drops_the_batch_in_flight_of_a_large_tile(
    make_napari_viewer, tiny_model_file, tiny_model, qtbot, monkeypatch
):
    from napari_unet.inference.tiling.tile_plan import plan_tiles

    image = (np.random.default_rng(0).random((1000, 1000)) * 255).astype(np.uint8)
    assert plan_tiles(tiny_model, image.shape).tile_shape[0] > 512  # one large tile
    viewer, widget = _dock(make_napari_viewer, tiny_model_file, image)
    started, go, results = _hold_first_batch(monkeypatch)
    worker = widget.run()
    events = []
    worker.yielded.connect(events.append)
    qtbot.waitUntil(started.is_set, timeout=TIMEOUT_MS)
    widget.cancel()
    go.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    # the large tile's batch stopped part-way (its result dropped) and no batch came after it
    assert results == [None]
    assert all(e.done == 0 for e in events if e.stage == "predict")
    assert "large labels" not in viewer.layers
    assert widget.status.value == "cancelled"
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_progress_bar_counts_the_post_processing_steps(
    make_napari_viewer, tiny_model_file, qtbot, monkeypatch
):
    from napari_unet._napari._stage_bar import StageBar

    image = (np.random.default_rng(1).random((96, 128)) * 255).astype(np.uint8)
    viewer, widget = _dock(make_napari_viewer, tiny_model_file, image)
    asked = []  # what the dock asks its bar to show
    show = StageBar.show
    monkeypatch.setattr(
        StageBar, "show", lambda bar, *args: (asked.append(args), show(bar, *args))[1]
    )
    from qtpy.QtCore import Qt

    worker = widget.run()
    pbar, shown = widget._pbar.progress, []
    # what napari's activity dock shows: the bar's description, value and total at each step
    pbar.events.value.connect(lambda event: shown.append((pbar.desc, pbar.n, pbar.total)))

    def on_screen(done: int) -> bool:
        return any("post-processing" in d and n == done for d, n, _ in list(shown))

    def hold(event):  # in the worker: a tiny image's post-processing would outrun the GUI
        if event.stage == "postprocess":
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while not on_screen(event.done) and time.monotonic() < deadline:
                time.sleep(0.01)

    worker.yielded.connect(hold, Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    # instance labels: seeds, watershed, size filter, counted after the prediction
    assert [a for a in asked if a[0] == "post-processing"] == [
        ("post-processing", n, 3) for n in range(4)
    ]
    assert asked[0][0] == "predict"
    # napari's bar shows them counted, in order
    post = [(n, total) for desc, n, total in shown if "post-processing" in desc]
    assert {total for _, total in post} == {3}
    assert sorted(set(post)) == [(n, 3) for n in range(4)]
    assert [n for n, _ in post] == sorted(n for n, _ in post)
    assert "large labels" in viewer.layers
    assert widget.status.value.startswith("done")
