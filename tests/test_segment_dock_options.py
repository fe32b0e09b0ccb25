"""The Segment dock's display and detection options (issue 30): Outlines, the detection
settings under Advanced (from the model card, passed on when changed), and status counts that
go up once per stage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_unet._napari._stage_bar import StageCounts
from napari_unet._napari.segment._segment_settings import OUTLINE_WIDTH, changed_postprocessing
from napari_unet._napari.segment.segment_widget import BUILTIN, FROM_FILE, SegmentWidget

TIMEOUT_MS = 60_000


@pytest.fixture
def widget(make_napari_viewer, tiny_model_file):
    """A Segment widget in a viewer, set to the tiny model file (its card: no post-processing)."""
    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    w.model_source.value = FROM_FILE
    w.model_file.value = tiny_model_file
    w.auto_size.value = False
    w.engine.value = "torch"
    return w


def _run_to_end(widget, qtbot):
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def _settings(widget) -> dict[str, float]:
    keys = ("seed_threshold", "foreground_threshold", "split", "min_size")
    return {key: getattr(widget, key).value for key in keys}


# -- Outlines ------------------------------------------------------------------------------
def test_outlines_apply_to_each_run_and_follow_the_box(widget, qtbot):
    viewer = widget._viewer
    image = (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
    viewer.add_image(image, name="cells")
    assert not widget.outlines.value and widget.outlines.native.isVisibleTo(widget.native)
    _run_to_end(widget, qtbot)
    labels = viewer.layers["cells labels"]
    assert labels.contour == 0  # filled, as napari makes it
    widget.outlines.value = True  # ticked: the result shows outlines at once
    assert labels.contour == OUTLINE_WIDTH
    widget.outlines.value = False
    assert labels.contour == 0
    widget.outlines.value = True
    labels.contour = 0  # the user changed it in the layer controls; the next run applies it again
    _run_to_end(widget, qtbot)
    assert viewer.layers["cells labels"] is labels and labels.contour == OUTLINE_WIDTH


# -- detection settings from the model card -------------------------------------------------
def test_detection_settings_start_at_the_model_cards(make_napari_viewer, tiny_model, tmp_path):
    from napari_unet import save_model
    from napari_unet.model.files import builtin_model_path, read_card

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert widget.model_source.value == BUILTIN
    builtin = read_card(builtin_model_path("nuclei"))["postprocessing"]
    assert _settings(widget) == pytest.approx({k: builtin[k] for k in _settings(widget)})
    assert _settings(widget) == pytest.approx(
        {"seed_threshold": 0.6, "foreground_threshold": 0.6, "split": 1.5, "min_size": 20}
    )
    # a card without the entry: the engine's defaults (postprocessing_settings, instance_labels)
    plain = save_model(tiny_model, tmp_path / "plain.safetensors")
    widget.model_source.value = FROM_FILE
    widget.model_file.value = plain
    assert _settings(widget) == pytest.approx(
        {"seed_threshold": 0.5, "foreground_threshold": 0.5, "split": 0.0, "min_size": 10}
    )
    tuned = {"seed_threshold": 0.7, "foreground_threshold": 0.45, "split": 0.0, "min_size": 5}
    path = save_model(tiny_model, tmp_path / "tuned.safetensors", postprocessing=tuned)
    widget.model_file.value = path
    assert _settings(widget) == pytest.approx(tuned)
    widget.model_source.value = BUILTIN  # back to the built-in model: its card's values
    assert _settings(widget)["min_size"] == 20
    # the seed and foreground thresholds, split and size are Advanced rows
    assert all(getattr(widget, k) in widget.advanced.rows for k in _settings(widget))


def test_only_changed_settings_are_passed_on():
    card = {"seed_threshold": 0.6, "foreground_threshold": 0.6, "split": 1.5, "min_size": 20}
    assert changed_postprocessing(dict(card), card) == {}
    assert changed_postprocessing({**card, "seed_threshold": 0.8}, card) == {"seed_threshold": 0.8}
    assert changed_postprocessing({**card, "min_size": 0}, card) == {"min_size": 0}


def test_a_changed_minimum_size_removes_small_objects(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    widget = SegmentWidget(viewer)  # the built-in model: min_size 20 from its card
    widget.image.value = viewer.layers["nuclei"]
    widget.auto_size.value = False
    widget.engine.value = "torch"
    widget.min_size.value = 0
    _run_to_end(widget, qtbot)
    sizes = np.bincount(np.asarray(viewer.layers["nuclei labels"].data).ravel())[1:]
    sizes = sizes[sizes > 0]
    assert sizes.min() < 20 and sizes.size > 50  # small pieces the card's 20 px would remove
    widget.min_size.value = int(np.median(sizes))
    _run_to_end(widget, qtbot)
    after = np.bincount(np.asarray(viewer.layers["nuclei labels"].data).ravel())[1:]
    after = after[after > 0]
    assert after.min() >= widget.min_size.value
    assert sizes.size // 2 - 5 <= after.size < sizes.size


def test_changed_thresholds_go_to_the_engine(widget, qtbot, monkeypatch):
    """The dock hands segment_iter ``postprocessing={...}`` with the thresholds the user
    changed (and ``min_size=``); the engine is replaced by a recorder here."""
    import inspect

    from napari_unet.inference import pipeline

    calls = []
    real = pipeline.segment_iter
    engine_takes_it = "postprocessing" in inspect.signature(real).parameters

    def recording(image, model=None, *, postprocessing=None, **kwargs):
        calls.append({"postprocessing": postprocessing, **kwargs})
        if engine_takes_it:
            kwargs["postprocessing"] = postprocessing
        return (yield from real(image, model, **kwargs))

    monkeypatch.setattr(pipeline, "segment_iter", recording)
    viewer = widget._viewer
    viewer.add_image((np.random.default_rng(3).random((48, 48)) * 255).astype(np.uint8), name="c")
    _run_to_end(widget, qtbot)
    assert calls[-1].get("postprocessing") is None and "min_size" not in calls[-1]
    widget.seed_threshold.value = 0.8
    widget.split.value = 2.0
    widget.min_size.value = 3
    _run_to_end(widget, qtbot)
    assert calls[-1]["postprocessing"] == pytest.approx({"seed_threshold": 0.8, "split": 2.0})
    assert calls[-1]["min_size"] == 3
    assert widget.status.value.startswith("done")


# -- test-time augmentation -----------------------------------------------------------------
def test_tta_box_runs_segment_with_tta_and_the_result_says_so(widget, qtbot, tiny_model_file):
    """Ticked under Advanced: the dock's result is ``segment(..., tta=True)``'s, and the layer's
    metadata and the status line record it."""
    from napari_unet import segment

    viewer = widget._viewer
    from scipy import ndimage as ndi

    blobs = ndi.gaussian_filter(np.random.default_rng(5).random((48, 64)), 3)  # not noise
    image = ((blobs - blobs.min()) / np.ptp(blobs) * 255).astype(np.uint8)
    viewer.add_image(image, name="cells")
    assert widget.tta in widget.advanced.rows and not widget.tta.value  # off by default
    widget.probabilities.value = True
    _run_to_end(widget, qtbot)
    assert viewer.layers["cells labels"].metadata["napari_unet"]["tta"] is False
    assert "test-time augmentation" not in widget.status.value
    plain = np.asarray(viewer.layers["cells probabilities"].data)

    widget.tta.value = True
    _run_to_end(widget, qtbot)
    labels = viewer.layers["cells labels"]
    assert labels.metadata["napari_unet"]["tta"] is True
    assert widget.status.value.startswith("done")
    assert "test-time augmentation" in widget.status.value
    kwargs = {"diameter": None, "engine": "torch", "return_probabilities": True}
    expected, probs = segment(image, tiny_model_file, tta=True, **kwargs)
    np.testing.assert_array_equal(np.asarray(labels.data), expected)
    shown = np.asarray(viewer.layers["cells probabilities"].data)
    np.testing.assert_allclose(shown, probs, atol=1e-6)
    # the tiny model's labels are the same either way; its probabilities show the views averaged
    assert not np.allclose(shown, plain, atol=1e-4)
    _, without = segment(image, tiny_model_file, **kwargs)
    np.testing.assert_allclose(plain, without, atol=1e-6)


# -- status counts --------------------------------------------------------------------------
def test_stage_counts_never_go_back_over_passes():
    counts = StageCounts()
    # the size search's passes as the engine counts them: 1/3 ... 3/3 ... 1/2 ... 0/3
    engine = [(1, 3), (2, 3), (3, 3), (1, 2), (2, 2), (0, 3), (1, 3), (3, 3)]
    shown = [counts.count("measuring objects", d, t) for d, t in engine]
    done = [d for d, _ in shown]
    totals = [t for _, t in shown]
    assert done == sorted(done) and totals == sorted(totals)
    assert all(d <= t for d, t in shown)
    assert shown[-1] == (8, 8)  # 3 + 2 + 3 steps
    assert counts.count("predict", 0, 4) == (0, 4)  # another stage counts on its own


def test_dock_status_counts_up_during_the_size_search(make_napari_viewer, qtbot):
    """The built-in model's size search on the sample (several looks, each counted from 0 by
    the engine): the dock's status and bar only count up within a stage."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    widget = SegmentWidget(viewer)
    widget.image.value = viewer.layers["nuclei"]
    widget.engine.value = "torch"
    raw, lines = [], []

    def seen(event):  # after the dock's own handler (connected first): its status line
        raw.append((event.stage, event.done, event.total))
        lines.append(widget.status.value)

    worker = widget.run()
    worker.yielded.connect(seen)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    measuring = [(d, t) for s, d, t in raw if s == "measuring objects"]
    assert any(b[0] < a[0] for a, b in itertools.pairwise(measuring))  # the engine restarts
    shown = [line for line in lines if line.startswith("measuring objects:")]
    counted = [tuple(int(n) for n in line.split(":")[1].split()[0].split("/")) for line in shown]
    assert len(counted) >= 2
    assert [d for d, _ in counted] == sorted(d for d, _ in counted)
    assert [t for _, t in counted] == sorted(t for _, t in counted)
    assert widget.status.value.startswith("done")
