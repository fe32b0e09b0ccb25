"""The correct-and-retrain loop in napari (issue 26, "the loop in napari").

- Retrain uses the result the user edited, also after "No" to replacing it added a new layer.
- A model from a training run is offered in every Segment dock but used only when the user
  picks it or when it beats the model in use on held-back images; the dock and a notification
  say which model is used and why.
- With a single annotated image, the Train dock fine-tunes the built-in model by default.
- Undo retrain makes the Segment docks use the model from before the retraining again.

Every training is tiny (the tiny test model or a tiny network, one epoch of a few steps on
crops of the bundled sample), so each test takes seconds on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari import _model_registry as registry
from napari_unet._napari._model_registry import BUILTIN, FROM_FILE, TRAINED
from napari_unet._napari.segment import _segment_output
from napari_unet._napari.train._train_job import MARGIN, MIN_OBJECTS
from napari_unet._napari.train._train_settings import (
    FINE_TUNE_EPOCHS,
    FINE_TUNE_LR,
    NEW_EPOCHS,
    NEW_LR,
    START_BUILTIN,
    START_BUILTIN_HE,
    START_NEW,
)
from napari_unet._napari.train.train_widget import TrainWidget
from napari_unet.common.sample import load_sample

PLUGIN = "napari-unet"
TIMEOUT_MS = 120_000
#: a 524x348 H&E slide of the DSB stage-1 test set
HE_SLIDE = "1d9eacb3161f1e2b45550389ecf7c535c7199c6b44b1c6a46303f7b965e508f1"


@pytest.fixture(autouse=True)
def _no_models_left():
    registry.clear_models()
    yield
    registry.clear_models()


@pytest.fixture
def infos(monkeypatch) -> list[str]:
    """The information notifications shown, as text."""
    import napari.utils.notifications as notes

    shown: list[str] = []
    monkeypatch.setattr(notes, "show_info", shown.append)
    return shown


@pytest.fixture
def crops() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two crops of the bundled nuclei sample: name -> (image, labels)."""
    image, labels = load_sample()
    return {
        "a": (image[:128, :160], labels[:128, :160]),
        "b": (image[128:256, 160:320], labels[128:256, 160:320]),
    }


def _segment_dock(viewer, model_file):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Segment")
    widget.model_source.value = FROM_FILE
    widget.model_file.value = model_file
    widget.output.value = "instance"
    widget.retrain.epochs.value = 1
    return widget


def _segment(widget, qtbot, image_name: str):
    widget.image.value = widget._viewer.layers[image_name]
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.value.startswith("done"), widget.status.value


def _retrain(widget, qtbot):
    assert widget.retrain.run() is not None, widget.retrain.status.value
    qtbot.waitUntil(lambda: not widget.retrain.running, timeout=TIMEOUT_MS)
    assert widget.retrain.model is not None, widget.retrain.status.value


def _tiny(train: TrainWidget, *, steps: int = 2) -> None:
    """A tiny new network: depth 2, width 4, one epoch of ``steps`` steps on 32x32 patches."""
    train.architecture.start_from.value = START_NEW
    train.architecture.depth.value, train.architecture.base_filters.value = 2, 4
    h = train.hyper
    h.patch.value, h.epochs.value, h.steps.value, h.batch_size.value = 32, 1, steps, 2
    h.device.value, h.augment.value = "cpu", False


def _ap50(image, labels, model) -> float:
    """AP@0.5 of ``model`` on ``image``, segmented as the Segment dock does (the oracle)."""
    from napari_unet import segment
    from napari_unet.evaluation.instances import average_precision

    predicted = segment(image[None], model, axes="CYX", output="instance", engine="torch")
    return float(average_precision(labels, predicted, (0.5,)).mean)


def _held_back(names: list[str]) -> str:
    """The pair a run on ``names`` holds back for validation (seed 0, fraction 0.1)."""
    from napari_unet.training.validation import split_validation

    _, val = split_validation(list(names), 0.1, 0)
    assert len(val) == 1
    return val[0]


# -- Retrain uses the result the user edited -------------------------------------------------
def test_no_to_replacing_edits_keeps_retraining_on_the_edited_layer(
    make_napari_viewer, qtbot, tiny_model_file, crops
):
    viewer = make_napari_viewer()
    viewer.add_image(crops["a"][0], name="nuclei")
    widget = _segment_dock(viewer, tiny_model_file)
    _segment(widget, qtbot, "nuclei")
    edited = viewer.layers["nuclei labels"]
    edited.paint((30, 30), 7)  # the user draws a missed object
    corrected = np.asarray(edited.data).copy()

    widget.confirm_replace = lambda name: False  # "No": keep my edits
    _segment(widget, qtbot, "nuclei")
    assert "nuclei labels (new)" in viewer.layers
    np.testing.assert_array_equal(edited.data, corrected)
    # the box stays on the edited layer, not on the unedited one written beside it
    assert widget.retrain.result.value.name == "nuclei labels"

    # pointed at the unedited result of the same model, Retrain takes the edited one
    widget.retrain.result.value = viewer.layers["nuclei labels (new)"]
    _retrain(widget, qtbot)
    assert widget.retrain.result.value.name == "nuclei labels"
    description = widget.retrain.model.card["description"]
    assert description.endswith("fine-tuned in napari on corrected nuclei labels"), description
    assert "error" not in widget.retrain.status.value


# -- a model from a training run is used only when picked or when it beats the one in use ----
def test_a_worse_new_network_is_offered_but_the_model_in_use_is_kept(
    make_napari_viewer, qtbot, crops, infos
):
    viewer = make_napari_viewer()
    for name, (image, labels) in crops.items():
        viewer.add_image(image, name=name)
        viewer.add_labels(labels, name=f"{name} gt")
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Segment")
    assert segment.model_source.value == BUILTIN  # the model in use
    train = TrainWidget(viewer)
    train.pairs.add_row()  # a second pair: one of them is held back
    assert [s.image_name for s in train.pairs.sources()] == ["a", "b"]
    assert train.architecture.start_from.value == START_NEW  # two images: a new network
    _tiny(train)
    train.model_name.value = "two-step net"
    assert train.run() is not None
    qtbot.waitUntil(lambda: train.worker is None, timeout=TIMEOUT_MS)
    assert train.result is not None, train.message.value

    # both models segmented the held-back image as Segment does, and were scored there
    held = _held_back(["a", "b"])
    scores = train._scores
    assert scores.n_images == 1
    assert scores.old_ap50 == pytest.approx(_ap50(*crops[held], None))
    assert scores.new_ap50 == pytest.approx(_ap50(*crops[held], train.result.model))
    assert scores.old_ap50 > 0.5 > scores.new_ap50  # the built-in model is far better
    # offered, not used, and said plainly (in the dock and a notification)
    assert TRAINED + "two-step net" in segment.model_source.choices
    assert segment.model_source.value == BUILTIN
    said = (
        f"kept 'built-in nuclei': the new model 'two-step net' scored AP@0.5 "
        f"{scores.new_ap50:.3f} on 1 held-back image against {scores.old_ap50:.3f}"
    )
    assert said in train.message.value
    assert said in infos[-1]


def test_a_new_model_that_beats_the_one_in_use_on_held_back_data_is_used(
    make_napari_viewer, qtbot, crops, tiny_model_file, infos
):
    viewer = make_napari_viewer()
    for name, (image, labels) in crops.items():
        viewer.add_image(image, name=name)
        viewer.add_labels(labels, name=f"{name} gt")
    segment = _segment_dock(viewer, tiny_model_file)  # an untrained model in use
    train = TrainWidget(viewer)
    train.pairs.add_row()
    arch, h = train.architecture, train.hyper
    arch.start_from.value = START_BUILTIN  # the user's choice: fine-tune the built-in model
    qtbot.waitUntil(lambda: not arch.depth.enabled, timeout=60_000)
    h.patch.value, h.epochs.value, h.steps.value, h.batch_size.value = 64, 1, 1, 1
    h.device.value, h.augment.value = "cpu", False
    h.learning_rate.value = 1e-6  # one step that barely moves it: the built-in model's quality
    train.model_name.value = "nuclei tuned"
    assert train.run() is not None
    qtbot.waitUntil(lambda: train.worker is None, timeout=TIMEOUT_MS)
    assert train.result is not None, train.message.value

    held = _held_back(["a", "b"])
    scores = train._scores
    assert scores.old_ap50 == pytest.approx(_ap50(*crops[held], tiny_model_file))
    assert scores.new_ap50 == pytest.approx(_ap50(*crops[held], train.result.model))
    assert scores.new_ap50 >= scores.old_ap50 + MARGIN  # clearly ahead
    assert segment.model_source.value == TRAINED + "nuclei tuned"  # used at once
    said = (
        f"now using the new model 'nuclei tuned': it scored AP@0.5 {scores.new_ap50:.3f} on "
        f"1 held-back image against {scores.old_ap50:.3f} for 'tiny'"
    )
    assert said in train.message.value and said in infos[-1]
    # a Segment dock opened later uses it too
    _, later = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net Segment")
    assert later.model_source.value == TRAINED + "nuclei tuned"


def test_retrain_compares_on_a_held_back_corrected_image(
    make_napari_viewer, qtbot, tiny_model_file, crops, infos
):
    viewer = make_napari_viewer()
    for name in crops:
        viewer.add_image(crops[name][0], name=name)
    widget = _segment_dock(viewer, tiny_model_file)
    for name in crops:
        _segment(widget, qtbot, name)
        viewer.layers[f"{name} labels"].paint((40, 40), 9)
    _retrain(widget, qtbot)
    scores = widget.retrain.scores
    assert scores.n_images == 1 and scores.reason == ""
    assert 0.0 <= scores.new_ap50 <= 1.0 and 0.0 <= scores.old_ap50 <= 1.0
    # used only if it scored higher than 'tiny'; the status and a notification say so
    used = widget.model_source.value == TRAINED + "tiny corrected"
    assert used == scores.beats
    verb = "now using the new model" if used else "kept 'tiny'"
    assert verb in widget.retrain.status.value
    said = widget.retrain.status.value
    assert f"AP@0.5 {scores.new_ap50:.3f} on 1 held-back image" in said
    if scores.too_few:  # one painted object: no verdict, and the status says why
        assert f"it holds only {scores.n_objects} annotated object" in said
    assert infos[-1] == widget.retrain.status.value


# -- Undo retrain ---------------------------------------------------------------------------
def test_undo_retrain_goes_back_to_the_parent_model_in_every_segment_dock(
    make_napari_viewer, qtbot, tiny_model_file, crops, infos, monkeypatch
):
    from napari_unet._napari.train import _train_job

    scored: list[tuple[object, int]] = []

    def scores(model, held_back, config, invert="auto"):  # the fine-tuned model wins
        scored.append((model, len(held_back)))
        return 0.4 if str(model) == str(tiny_model_file) else 0.9

    monkeypatch.setattr(_train_job, "_mean_ap50", scores)
    monkeypatch.setattr(_train_job, "MIN_OBJECTS", 1)  # one painted object gives a verdict
    viewer = make_napari_viewer()
    for name in crops:
        viewer.add_image(crops[name][0], name=name)
    widget = _segment_dock(viewer, tiny_model_file)
    other = _segment_dock(viewer, tiny_model_file)
    for name in crops:
        _segment(widget, qtbot, name)
        viewer.layers[f"{name} labels"].paint((40, 40), 9)
    assert not widget.retrain.undo_button.enabled
    _retrain(widget, qtbot)

    assert [n for _, n in scored] == [1, 1]  # the new model and its parent, one image each
    assert scored[0][0] is widget.retrain.model and scored[1][0] == str(tiny_model_file)
    for dock in (widget, other):  # it beat its parent: every Segment dock uses it
        assert dock.model_source.value == TRAINED + "tiny corrected"
    said = (
        "now using the new model 'tiny corrected': it scored AP@0.5 0.900 on 1 held-back "
        "image against 0.400 for 'tiny'"
    )
    assert said in widget.retrain.status.value and said in infos[-1]
    assert widget.retrain.undo_button.enabled

    widget.retrain.undo_button.native.click()
    for dock in (widget, other):
        assert dock.model_source.value == FROM_FILE
        assert str(dock.model_file.value) == str(tiny_model_file)
        assert TRAINED + "tiny corrected" in dock.model_source.choices  # still offered
    assert not widget.retrain.undo_button.enabled
    assert "using 'tiny' again" in widget.retrain.status.value
    # the next result comes from the parent model again
    from napari_unet._napari.segment import _results

    widget.confirm_replace = lambda name: True
    _segment(widget, qtbot, "a")
    record = _results.result_record(viewer.layers["a labels"])
    assert record.model_ref == str(tiny_model_file)


# -- the Train dock's default -----------------------------------------------------------------
def test_one_annotated_image_fine_tunes_the_built_in_model_by_default(
    make_napari_viewer, qtbot, crops
):
    viewer = make_napari_viewer()
    train = TrainWidget(viewer)  # opened before the data: it follows the layers
    arch, h = train.architecture, train.hyper
    assert arch.start_from.value == START_NEW
    viewer.add_image(crops["a"][0], name="a")
    viewer.add_labels(crops["a"][1], name="a gt")
    assert arch.start_from.value == START_BUILTIN and arch.init == "nuclei"
    assert (h.epochs.value, h.learning_rate.value) == (FINE_TUNE_EPOCHS, FINE_TUNE_LR)
    qtbot.waitUntil(lambda: not arch.depth.enabled, timeout=60_000)  # the built-in network

    viewer.add_image(crops["b"][0], name="b")
    viewer.add_labels(crops["b"][1], name="b gt")
    train.pairs.add_row()  # two annotated images: a new network, its settings back
    assert arch.start_from.value == START_NEW and arch.depth.enabled
    assert (h.epochs.value, h.learning_rate.value) == (NEW_EPOCHS, NEW_LR)
    viewer.layers.remove("b gt")
    viewer.layers.remove("b")  # the second row falls back on the first pair: one image
    assert [(s.image_name, s.labels_name) for s in train.pairs.sources()] == [("a", "a gt")] * 2
    assert arch.start_from.value == START_BUILTIN

    h.epochs.value = 3  # the user's own values are kept when the start changes
    arch.start_from.value = START_NEW  # the user's choice is kept from now on
    assert (h.epochs.value, h.learning_rate.value) == (3, NEW_LR)
    viewer.add_image(crops["b"][0], name="b")
    viewer.add_labels(crops["b"][1], name="b gt")
    viewer.layers.remove("b gt")
    assert arch.start_from.value == START_NEW

    # a colour image that is not a stained slide: no built-in model learnt it
    rgb = make_napari_viewer()
    rgb.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    rgb.add_labels(np.zeros((64, 64), np.uint8), name="gt")
    assert TrainWidget(rgb).architecture.start_from.value == START_NEW


def test_the_default_fine_tune_trains_from_the_built_in_model(make_napari_viewer, qtbot, crops):
    viewer = make_napari_viewer()
    viewer.add_image(crops["a"][0], name="a")
    viewer.add_labels(crops["a"][1], name="a gt")
    train = TrainWidget(viewer)
    assert train.architecture.start_from.value == START_BUILTIN
    h = train.hyper
    h.patch.value, h.epochs.value, h.steps.value, h.batch_size.value = 64, 1, 1, 1
    h.device.value, h.augment.value = "cpu", False
    assert train.run() is not None
    qtbot.waitUntil(lambda: train.worker is None, timeout=TIMEOUT_MS)
    card = train.result.model.card
    assert card["provenance"]["initialized_from"]["name"] == "nuclei"
    assert card["provenance"]["training"]["learning_rate"] == FINE_TUNE_LR
    # one image: a strip of it was held back; the new model, trained on the rest with the
    # parent's post-processing, was compared with the built-in one there
    assert card["postprocessing"]["chosen_by"].startswith("kept from the model fine-tuned")
    scores = train._scores
    assert scores.n_images == 1 and scores.new_ap50 is not None
    assert (registry.current_choice() is not None) == scores.beats
    assert "on its held-back strip against" in train.message.value


def test_one_stained_slide_fine_tunes_the_built_in_he_model(make_napari_viewer, qtbot, data_dir):
    """An H&E slide as an RGB layer, annotated: the Train dock starts from the built-in H&E
    model (it used to offer only the nuclei model, which takes one channel), which learns the
    slide's optical density, as Segment shows it to that model."""
    import tifffile

    folder, slide = data_dir / "dsb2018_stage1_test", f"{HE_SLIDE}.tif"
    rgb = tifffile.imread(folder / "images" / slide)[100:228, 100:228, :3]
    gt = tifffile.imread(folder / "labels" / slide)[100:228, 100:228]
    viewer = make_napari_viewer()
    viewer.add_image(np.ascontiguousarray(rgb), name="slide", rgb=True)
    viewer.add_labels(gt, name="slide gt")
    train = TrainWidget(viewer)
    arch, h = train.architecture, train.hyper
    assert arch.start_from.value == START_BUILTIN_HE and arch.init == "nuclei-he"
    assert (h.epochs.value, h.learning_rate.value) == (FINE_TUNE_EPOCHS, FINE_TUNE_LR)
    h.patch.value, h.epochs.value, h.steps.value, h.batch_size.value = 64, 1, 1, 1
    h.device.value, h.augment.value = "cpu", False
    said, on_event = [], train.monitor.on_event

    def status_after(event):  # the status line each event leaves
        on_event(event)
        said.append(train.monitor.status.value)

    train.monitor.on_event = status_after
    assert train.run() is not None
    qtbot.waitUntil(lambda: train.worker is None, timeout=TIMEOUT_MS)
    card = train.result.model.card
    assert card["provenance"]["initialized_from"]["name"] == "nuclei-he"
    assert card["colour_input"] == "optical_density"
    assert any("1 of 1 stained colour image(s) as optical density" in s for s in said)
    # it was judged against what Segment's built-in choice runs on this slide, and says so
    assert train._rival_name == f"{BUILTIN} (nuclei-he on stained slides)"


def test_the_registry_names_trained_models_as_the_segment_dock_does(tiny_model):
    assert registry.trained_choice("offered") == TRAINED + "offered"
    record = _segment_output.model_record("a", TRAINED + "offered", tiny_model)
    assert record.model_ref is tiny_model
    assert record.model_name == registry.model_name(TRAINED + "offered", tiny_model)
    assert _segment_output.model_record("a", BUILTIN, None).model_name == BUILTIN
    registry.register_model("offered", tiny_model, select=False)
    assert registry.current_choice() is None
    registry.register_model("used", tiny_model)  # a direct registration is a pick
    assert registry.current_choice() == (TRAINED + "used", "")
    registry.unregister_model("used")
    current = registry.current_choice()  # a forgotten model is in use nowhere
    assert current is None or not current[0].startswith(TRAINED)


def test_held_back_scores_tie_keeps_and_unlabelled_pixels_are_left_out(crops):
    from napari_unet._napari.train._train_job import HeldBackScores, _annotated, held_back_scores
    from napari_unet.evaluation.instances import average_precision
    from napari_unet.training.config import TrainConfig

    image, labels = crops["a"]
    config = TrainConfig(device="cpu")
    ignore = 999
    sparse = labels.astype(np.int64)
    sparse[:, 80:] = ignore  # the right half is not annotated
    held = [_annotated(image[None], sparse, None, ignore)]
    region = np.zeros(labels.shape, bool)
    region[:, :80] = True
    np.testing.assert_array_equal(held[0][2], region)
    # the same model on both sides: a tie, which keeps the model in use
    scores = held_back_scores("nuclei", "nuclei", held, config)
    truth = np.where(region, labels, 0)
    expected = average_precision(truth, _predicted(image), (0.5,), region=region).mean
    assert scores.new_ap50 == scores.old_ap50 == pytest.approx(expected)
    assert scores.n_images == 1 and not scores.beats
    assert scores.n_objects == len(np.unique(truth)) - 1
    assert "kept 'a': the new model 'b' scored AP@0.5" in scores.describe("b", "a")
    # nothing to compare on: no scores, and the reason in plain words
    # ahead, but by less than the margin: within the noise of a few held-back objects
    near = HeldBackScores(0.833, 0.806, 1)
    assert not near.beats and "(not 0.05 or more ahead)" in near.describe("b", "a")
    assert HeldBackScores(0.86, 0.806, 1).beats
    # far ahead, but on fewer than MIN_OBJECTS held-back objects: no verdict
    few = HeldBackScores(0.333, 0.167, 1, unit="strip", n_objects=4)
    assert few.too_few and not few.beats
    assert few.describe("b", "a").startswith(
        "kept 'a': the new model 'b' scored AP@0.5 0.333 on its held-back strip against "
        "0.167, but it holds only 4 annotated objects, too few to judge"
    )
    assert HeldBackScores(0.333, 0.167, 1, n_objects=MIN_OBJECTS).beats
    none = held_back_scores("nuclei", "nuclei", [], config)
    assert (none.new_ap50, none.beats) == (None, False)
    assert none.describe("b", "a").startswith("kept 'a': no image was held back")
    semantic = held_back_scores("nuclei", "nuclei", held, TrainConfig(task="semantic"))
    assert semantic.reason == "AP@0.5 compares instance models only"


def _predicted(image):
    from napari_unet import segment

    return segment(image[None], "nuclei", axes="CYX", output="instance", engine="torch")
