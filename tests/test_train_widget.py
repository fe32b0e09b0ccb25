"""The U-Net Train widget: a tiny real training under napari, Stop, Save, preview, and bad input.

Every training here is tiny (depth 2, base 4, 32x32 patches, a few steps on a crop of the
bundled sample), so each run takes seconds on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari import _model_registry as registry
from napari_unet._napari.train._train_inputs import PairSource, channel_axis, expand_sources
from napari_unet._napari.train._train_settings import START_NEW
from napari_unet._napari.train.train_widget import TrainWidget
from napari_unet.common.errors import ShapeError, UserInputError
from napari_unet.common.sample import load_sample

TIMEOUT_MS = 120_000


@pytest.fixture
def crop():
    image, labels = load_sample()
    return image[:96, :128], labels[:96, :128]


@pytest.fixture
def viewer(make_napari_viewer):
    registry.clear_models()
    yield make_napari_viewer()
    registry.clear_models()


def _tiny(widget: TrainWidget, *, epochs: int = 2, steps: int = 3) -> None:
    widget.architecture.start_from.value = START_NEW  # one image would fine-tune the built-in
    widget.architecture.depth.value = 2
    widget.architecture.base_filters.value = 4
    h = widget.hyper
    h.patch.value, h.epochs.value, h.steps.value, h.batch_size.value = 32, epochs, steps, 2
    h.device.value = "cpu"
    h.augment.value = False


def _finish(qtbot, widget: TrainWidget) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def test_tiny_training_plots_registers_previews_and_saves(viewer, qtbot, crop, tmp_path):
    from napari_unet import load_model
    from napari_unet._napari.train._train_job import predict_slice

    widget = TrainWidget(viewer)  # layers added afterwards: the choices must follow
    viewer.add_image(crop[0], name="nuclei")
    viewer.add_labels(crop[1], name="nuclei gt")
    _tiny(widget)
    widget.hyper.preview.value = True
    widget.hyper.preview_every.value = 1
    widget.model_name.value = "tiny nuclei"

    worker = widget.run()
    assert worker is not None
    assert not widget.start_button.enabled and widget.stop_button.enabled
    _finish(qtbot, widget)

    result = widget.result
    assert result is not None and not result.stopped
    assert [h["epoch"] for h in widget.history] == [0, 1]
    # the plot holds exactly what training reported
    assert widget.plot.epoch_x == [1, 2]
    assert widget.plot.val_dice == [h["val_dice"] for h in result.history]
    assert widget.plot.train_loss == [h["train_loss"] for h in result.history]
    assert len(widget.plot.batch_loss) == 6 and np.all(np.isfinite(widget.plot.batch_loss))
    assert all(0.0 <= d <= 1.0 for d in widget.plot.val_dice)
    assert (worker.pbar.n, worker.pbar.total) == (6, 6)
    # the run ends by choosing the post-processing: its validation AP is plotted and shown
    tuned = result.postprocessing
    assert (widget.plot.ap50, widget.plot.mean_ap) == (tuned.ap50, tuned.mean_ap)
    assert result.model.card["postprocessing"]["seed_threshold"] == tuned.settings["seed_threshold"]
    assert widget.start_button.enabled and not widget.stop_button.enabled
    # one pair: a strip of it was held back, validated on, and the new model was compared
    # with the built-in one there; offered in the Segment widget at once, used only if better
    assert "the last quarter of its longest side is held back" in widget.monitor.note.value
    assert "(on a held-back strip)" in widget.message.value
    assert registry.get_model("tiny nuclei") is result.model
    scores = widget._scores
    assert scores.n_images == 1 and "on its held-back strip against" in widget.message.value
    assert (registry.current_choice() is not None) == scores.beats

    # the last preview used the best model, i.e. the returned one
    preview = viewer.layers["nuclei preview"]
    assert preview.data.shape == crop[1].shape
    assert preview.metadata["preview_epoch"] == 1
    config = widget._config
    expected = predict_slice(result.model, widget._sources[0], (), config)
    np.testing.assert_array_equal(preview.data, expected)

    # Save: suffix added, round trip, no silent overwrite
    path = widget.save(tmp_path / "tiny")
    assert path == tmp_path / "tiny.safetensors" and path.is_file()
    loaded = load_model(path)
    assert loaded.card["name"] == "tiny nuclei"
    for key, value in result.model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key].numpy(), value.numpy())
    asked = []
    widget.confirm_overwrite = lambda p: asked.append(p) or False
    before = path.read_bytes()
    assert widget.save(path) is None
    assert asked == [path] and path.read_bytes() == before
    widget.confirm_overwrite = lambda p: True
    assert widget.save(path) == path


@pytest.mark.parametrize("how", ["stop button", "activity dock cancel"])
def test_stop_keeps_the_best_model(viewer, qtbot, crop, how):
    viewer.add_image(crop[0], name="nuclei")
    viewer.add_labels(crop[1], name="nuclei gt")
    widget = TrainWidget(viewer)
    _tiny(widget, epochs=200, steps=2)
    worker = widget.run()
    qtbot.waitUntil(lambda: len(widget.plot.epoch_x) >= 1, timeout=TIMEOUT_MS)
    if how == "stop button":
        widget.stop_button.changed.emit(True)
    else:
        worker.quit()  # what napari's activity dock calls
    _finish(qtbot, widget)

    result = widget.result
    assert result is not None and result.stopped
    assert 1 <= len(result.history) < 200
    assert result.best_epoch >= 0
    assert registry.registered_models() == {"nuclei U-Net": result.model}
    assert widget.message.value.startswith("stopped")


def test_z_stack_trains_per_annotated_slice_and_previews_the_visible_one(viewer, qtbot, crop):
    stack = np.stack([np.roll(crop[0], 16 * z, axis=1) for z in range(3)])
    gt = np.stack([np.roll(crop[1], 16 * z, axis=1) for z in range(3)])
    region = np.zeros(gt.shape, np.uint8)
    region[0], region[2] = 1, 1  # slice 1 is not annotated
    viewer.add_image(stack, name="stack")
    viewer.add_labels(gt, name="stack gt")
    viewer.add_labels(region, name="annotated")
    widget = TrainWidget(viewer)
    row = widget.pairs.rows[0]
    row.labels_combo.value = viewer.layers["stack gt"]
    row.region_combo.value = viewer.layers["annotated"]
    _tiny(widget, epochs=1, steps=2)
    widget.hyper.preview.value = True
    widget.hyper.preview_every.value = 1
    viewer.dims.set_current_step(0, 1)
    assert widget.run() is not None
    _finish(qtbot, widget)

    assert widget.result is not None, widget.message.value
    assert widget.training_data == ("stack [0]", "stack [2]")
    assert widget.result.model.card["provenance"]["n_training_images"] == 1  # + 1 validation
    from napari_unet._napari.train._train_job import predict_slice

    preview = viewer.layers["stack preview"]
    assert preview.data.shape == gt.shape
    assert preview.metadata["preview_index"] == (1,)  # the slice shown in the viewer
    expected = predict_slice(widget.result.model, widget._sources[0], (1,), widget._config)
    np.testing.assert_array_equal(preview.data[1], expected)


def test_3d_network_trains_on_a_volume(viewer, qtbot):
    from skimage.draw import ellipsoid

    volume = np.zeros((16, 40, 40), np.uint16)
    ball = ellipsoid(4, 6, 6).astype(np.uint16)[1:-1, 1:-1, 1:-1]
    for i, (z, y, x) in enumerate([(2, 3, 3), (3, 22, 5), (5, 8, 24), (2, 24, 24)], start=1):
        volume[z : z + 9, y : y + 13, x : x + 13][ball > 0] = i
    image = (volume > 0) * 200.0 + np.random.default_rng(0).normal(20, 5, volume.shape)
    viewer.add_image(image, name="volume")
    viewer.add_labels(volume, name="volume gt")
    widget = TrainWidget(viewer)
    _tiny(widget, epochs=1, steps=1)
    widget.architecture.dims.value = "3D"
    widget.architecture.base_filters.value = 2
    widget.hyper.patch.value = 16
    widget.hyper.patch_depth.value = 8  # anisotropic patches: 8 x 16 x 16
    assert widget.run() is not None
    _finish(qtbot, widget)
    assert widget.result is not None, widget.message.value
    assert widget.result.model.ndim == 3 and len(widget.history) == 1
    training = widget.result.model.card["provenance"]["training"]
    assert tuple(training["patch_size"]) == (8, 16, 16)


def _message_after_run(qtbot, widget: TrainWidget) -> str:
    widget.run()
    _finish(qtbot, widget)
    assert widget.result is None
    return widget.message.value


def test_no_pairs_is_reported(viewer, qtbot):
    widget = TrainWidget(viewer)
    assert widget.run() is None
    assert "no training pairs" in widget.message.value


def test_shape_mismatch_is_reported(viewer, qtbot, crop):
    viewer.add_image(crop[0], name="nuclei")
    viewer.add_labels(crop[1][:64, :64], name="other")
    widget = TrainWidget(viewer)
    _tiny(widget)
    assert widget.run() is None
    assert "shape (96, 128)" in widget.message.value and "(64, 64)" in widget.message.value


def test_background_only_labels_are_reported(viewer, qtbot, crop):
    viewer.add_image(crop[0], name="nuclei")
    viewer.add_labels(np.zeros(crop[1].shape, np.uint16), name="empty")
    widget = TrainWidget(viewer)
    _tiny(widget)
    message = _message_after_run(qtbot, widget)
    assert "background only" in message
    assert registry.registered_models() == {}


def test_image_smaller_than_patch_is_reported(viewer, qtbot, crop):
    viewer.add_image(crop[0][:20, :20], name="small")
    viewer.add_labels(crop[1][:20, :20], name="small gt")
    widget = TrainWidget(viewer)
    _tiny(widget)
    assert widget.run() is None
    assert "smaller than the 32x32 training patch" in widget.message.value


def test_invalid_patch_size_names_valid_sizes(viewer, qtbot, crop):
    viewer.add_image(crop[0], name="nuclei")
    viewer.add_labels(crop[1], name="nuclei gt")
    widget = TrainWidget(viewer)
    _tiny(widget)
    widget.hyper.patch.value = 30
    assert widget.run() is None
    assert "28 or 32" in widget.message.value


def test_summary_follows_the_architecture(viewer, qtbot):
    from napari_unet import UNet
    from napari_unet.model.summary import count_parameters

    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="gt")
    widget = TrainWidget(viewer)
    qtbot.waitUntil(lambda: "Total params" in widget.architecture.summary.value, timeout=60_000)
    widget.architecture.depth.value = 1
    widget.architecture.base_filters.value = 8
    widget.hyper.patch.value = 64
    text = widget.architecture.summary.value
    expected = count_parameters(UNet(3, 3, depth=1, base_filters=8))
    assert f"Total params: {expected:,}" in text
    assert "input (1, 3, 64, 64)" in text  # RGB: three channels
    assert "(1, 8, 32, 32)" in text  # the pooled level
    widget.hyper.patch.value = 63
    assert "nearest valid sizes are 62 or 64" in widget.architecture.summary.value


def test_stacks_split_into_annotated_slices_and_channels_are_found():
    rng = np.random.default_rng(0)
    image = rng.random((4, 2, 40, 40))  # (Z, C, Y, X)
    labels = np.zeros((4, 40, 40), np.uint16)
    region = np.zeros((4, 40, 40), bool)
    region[1], region[3, :10] = True, True
    source = PairSource("stack", "gt", image, labels, region)
    assert channel_axis(source) == 1
    images, labels_out, regions, names = expand_sources([source], ndim=2)
    assert names == ["stack [1]", "stack [3]"]
    np.testing.assert_array_equal(images[1], image[3])  # (C, Y, X)
    assert regions[1].sum() == 400 and labels_out[0].shape == (40, 40)
    # 3D network: one pair, channel first
    images, _, _, names = expand_sources([PairSource("stack", "gt", image, labels)], ndim=3)
    assert names == ["stack"] and images[0].shape == (2, 4, 40, 40)
    rgb = PairSource("rgb", "gt", np.zeros((40, 40, 3)), labels[0], rgb=True)
    assert channel_axis(rgb) == 2
    with pytest.raises(ShapeError, match="at most one channel axis"):
        channel_axis(PairSource("rgb", "gt", np.zeros((40, 40, 3)), labels[0, :30]))
    with pytest.raises(UserInputError, match="no annotated pixel"):
        expand_sources([PairSource("s", "gt", image, labels, np.zeros_like(region))], ndim=2)


def test_registry_signals_and_errors():
    seen = []
    registry.clear_models()
    registry.models_changed.connect(seen.append)
    try:
        model = object()
        registry.register_model(" mine ", model)
        assert registry.registered_models() == {"mine": model}
        registry.unregister_model("mine")
        assert seen == ["mine", "mine"]
        with pytest.raises(UserInputError, match="no trained model called 'mine'"):
            registry.get_model("mine")
        with pytest.raises(UserInputError, match="non-empty"):
            registry.register_model("  ", model)
    finally:
        registry.models_changed.disconnect(seen.append)


def test_stop_before_the_first_epoch_keeps_no_model(viewer, qtbot, crop):
    viewer.add_image(crop[0], name="nuclei")
    viewer.add_labels(crop[1], name="nuclei gt")
    widget = TrainWidget(viewer)
    _tiny(widget, epochs=2, steps=1000)
    widget.run()
    qtbot.waitUntil(lambda: len(widget.plot.batch_loss) >= 1, timeout=TIMEOUT_MS)
    widget.stop()
    _finish(qtbot, widget)
    assert widget.result is None and registry.registered_models() == {}
    assert "no model kept" in widget.message.value
    assert not widget.save_button.enabled


def test_shapes_region_is_rasterised_on_the_labels_grid(viewer):
    viewer.add_image(np.zeros((60, 80)), name="image")
    viewer.add_labels(np.zeros((60, 80), np.uint8), name="gt")
    square = np.array([[10, 10], [10, 40], [30, 40], [30, 10]])
    viewer.add_shapes([square], shape_type="polygon", name="roi")
    widget = TrainWidget(viewer)
    widget.pairs.rows[0].region_combo.value = viewer.layers["roi"]
    region = widget.pairs.sources()[0].region
    assert region.shape == (60, 80) and region.dtype == bool
    assert region[10:30, 10:40].all() and not region[35:].any()
    widget.pairs.add_row()
    assert len(widget.pairs.sources()) == 2
    widget.pairs.remove_row(widget.pairs.rows[1])
    assert len(widget.pairs.sources()) == 1


def test_start_from_the_built_in_model_fine_tunes_it(viewer, qtbot, crop):
    from napari_unet import load_model
    from napari_unet._napari.train._train_settings import START_BUILTIN, START_NEW

    viewer.add_image(crop[0], name="nuclei")
    viewer.add_labels(crop[1], name="nuclei gt")
    widget = TrainWidget(viewer)
    _tiny(widget, epochs=1, steps=2)
    arch = widget.architecture
    arch.start_from.value = START_BUILTIN
    qtbot.waitUntil(lambda: not arch.depth.enabled, timeout=60_000)  # torch imports first
    builtin = load_model(None)
    # the built-in architecture is shown, locked, and summarised
    assert (arch.depth.value, arch.base_filters.value) == (
        builtin.config.depth,
        builtin.config.base_filters,
    )
    assert arch.task.value == "instance" and not arch.task.enabled
    widget.hyper.learning_rate.value = 1e-6

    assert widget.run() is not None
    _finish(qtbot, widget)
    model = widget.result.model
    assert model.card["provenance"]["initialized_from"]["name"] == "nuclei"
    assert model.card["normalization"] == builtin.card["normalization"]
    # two steps at lr 1e-6 barely move the built-in weights: training started from them
    trained = dict(model.named_parameters())
    for name, value in builtin.named_parameters():
        assert float((trained[name].detach().cpu() - value.detach()).abs().max()) < 1e-4, name

    arch.start_from.value = START_NEW
    assert arch.depth.enabled and arch.task.enabled
