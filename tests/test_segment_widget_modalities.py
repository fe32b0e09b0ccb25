"""The Segment dock on the images a microscopist opens: RGB copies of grey images, multichannel
layers (the Channel box), layers whose axes cannot be told (the Axes box), inverted images (the
Invert box), and the run's report in the status line and the labels' metadata.

Real data: 128 x 128 crops of the nuclei sample, with the built-in model.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari.segment.segment_widget import SegmentWidget

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def crop():
    """A 128 x 128 crop of the nuclei sample (uint8, ~20 nuclei), and its labels by the API."""
    from napari_unet import segment
    from napari_unet.common.sample import load_sample

    image, _ = load_sample()
    image = np.ascontiguousarray(image[:128, :128])
    return image, segment(image, axes="YX")


@pytest.fixture
def widget(make_napari_viewer):
    """A Segment dock with the built-in model (the default)."""
    return SegmentWidget(make_napari_viewer())


def _run_to_end(widget, qtbot):
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def _shown(w) -> bool:
    return not w.native.isHidden()


def _noise(seed):
    return (np.random.default_rng(seed).random((128, 128)) * 40).astype(np.uint8)


def test_rgb_copy_of_a_grey_image_segments_like_the_grey_image(widget, qtbot, crop):
    image, expected = crop
    viewer = widget._viewer
    viewer.add_image(np.stack([image] * 3, axis=-1), name="rgb", rgb=True)
    assert widget.axes.value == "YXC"
    assert not _shown(widget.channel)  # colour: no channel to choose
    assert (
        widget.status.value
        == "'rgb': axes YXC (from the layer; change them under Advanced), colour"
    )
    _run_to_end(widget, qtbot)
    labels = viewer.layers["rgb labels"]
    assert type(labels).__name__ == "Labels"
    assert labels.data.shape == (128, 128)
    np.testing.assert_array_equal(labels.data, expected)  # as the grey image itself
    n = len(np.unique(labels.data)) - 1
    assert n >= 10
    meta = labels.metadata["napari_unet"]
    assert meta["objects"] == n
    assert meta["choice"]["colour"] == "grey"
    assert (meta["choice"]["axes"], meta["choice"]["axes_source"]) == ("YXC", "layer")
    assert meta["choice"]["model"] == "nuclei" and not meta["choice"]["inverted"]
    assert meta["warning"] is None
    first, second = widget.status.value.splitlines()
    assert first.startswith(f"done: {n} objects in (128, 128)")
    assert second == "input: axes YXC, fluorescence: grey, model nuclei"


def test_unlabelled_channels_ask_for_axes_then_a_channel(widget, qtbot, crop):
    image, expected = crop
    viewer = widget._viewer
    viewer.add_image(np.stack([_noise(1), image, _noise(2)]), name="cells")
    # (3, 128, 128) without axis labels: channels or Z slices? The dock asks.
    assert widget.axes.value == ""
    assert widget.status.value.startswith("axes needed for 'cells': cannot tell")
    assert "CYX for channels" in widget.status.value
    assert widget.advanced.expanded and _shown(widget.axes)
    assert widget.run() is None  # refused at once, with the same words
    assert widget.status.value.startswith("error: cannot tell")
    assert not _shown(widget.channel)

    widget.axes.value = "cyx"
    assert _shown(widget.channel)
    assert widget.channel.choices == (None, 0, 1, 2)  # auto, then the three channels
    assert [widget.channel.native.itemText(i) for i in range(4)] == ["auto", "0", "1", "2"]
    assert widget.channel.value is None
    assert "3 channels" in widget.status.value and "as typed" in widget.status.value

    # auto with unnamed channels: the engine lists them, the dock says where to choose
    _run_to_end(widget, qtbot)
    assert widget.status.value.startswith("error: the image has 3 channels")
    assert "in the Channel box" in widget.status.value and "--channel" not in widget.status.value
    assert "cells labels" not in viewer.layers

    widget.channel.value = 1
    _run_to_end(widget, qtbot)
    labels = viewer.layers["cells labels"]
    assert labels.data.shape == (128, 128)
    np.testing.assert_array_equal(labels.data, expected)  # channel 1 is the nuclei image
    choice = labels.metadata["napari_unet"]["choice"]
    assert (choice["axes"], choice["axes_source"], choice["channel"]) == ("CYX", "given", 1)
    assert "input: axes CYX, channel 1, model nuclei" in widget.status.value


def test_named_channels_are_listed_and_auto_takes_the_nuclear_stain(widget, qtbot, crop):
    image, expected = crop
    viewer = widget._viewer
    viewer.add_image(
        np.stack([_noise(3), image, _noise(4)]), name="stained", axis_labels=("c", "y", "x"),
        metadata={"channel_names": ["actin", "DAPI", "tubulin"]},
    )  # fmt: skip
    viewer.add_image(image, name="plain")
    widget.image.value = viewer.layers["stained"]
    assert widget.axes.value == "CYX"
    texts = [widget.channel.native.itemText(i) for i in range(len(widget.channel.choices))]
    assert texts == ["auto", "0: actin", "1: DAPI", "2: tubulin"]
    assert "from the layer" in widget.status.value
    _run_to_end(widget, qtbot)
    labels = viewer.layers["stained labels"]
    np.testing.assert_array_equal(labels.data, expected)
    choice = labels.metadata["napari_unet"]["choice"]
    assert (choice["channel"], choice["channel_name"], choice["axes_source"]) == (
        1,
        "DAPI",
        "layer",
    )
    assert "channel 1 'DAPI'" in widget.status.value

    widget.image.value = viewer.layers["plain"]  # one channel: no Channel box
    assert not _shown(widget.channel) and widget.channel.choices == (None,)
    assert widget._job(viewer.layers["plain"])["channel"] is None


def test_invert_reaches_the_engine_and_says_why(widget, qtbot, crop, monkeypatch):
    import napari.utils.notifications as notifications

    image, expected = crop
    warnings = []
    monkeypatch.setattr(notifications, "show_warning", warnings.append)
    viewer = widget._viewer
    viewer.add_image(255 - image, name="brightfield")  # dark nuclei on a bright background
    assert widget.invert.value == "auto"
    _run_to_end(widget, qtbot)
    labels = viewer.layers["brightfield labels"]
    meta = labels.metadata["napari_unet"]
    assert meta["choice"]["inverted"] and "bright background" in meta["choice"]["invert_reason"]
    assert meta["choice"]["modality"] == "brightfield"
    assert "brightfield, inverted (bright background, median at" in widget.status.value
    assert meta["objects"] >= 0.8 * expected.max()  # about the nuclei of the grey image
    assert not warnings and "warning" not in widget.status.value

    widget.invert.value = "no"  # a fluorescence model on dark nuclei: out of its domain
    _run_to_end(widget, qtbot)
    meta = labels.metadata["napari_unet"]
    assert not meta["choice"]["inverted"]
    assert meta["warning"].startswith("out of domain")
    assert "warning: out of domain" in widget.status.value
    assert "Invert yes (Advanced)" in widget.status.value  # the dock's words, not --invert
    assert len(warnings) == 1 and "Invert yes" in warnings[0]

    viewer.layers["brightfield"].data = image
    widget.invert.value = "yes"
    _run_to_end(widget, qtbot)
    assert labels.metadata["napari_unet"]["choice"]["invert_reason"] == "given"
    assert "inverted (given)" in widget.status.value


def test_axes_guessed_from_the_shape_are_reported_as_guessed(widget):
    viewer = widget._viewer
    viewer.add_image(np.zeros((10, 64, 64), np.uint8), name="stack", scale=(2, 0.5, 0.5))
    assert widget.axes.value == "ZYX"  # 10 planes: a z-stack, not channels
    assert widget.status.value.startswith("'stack': axes ZYX (guessed from the shape")
    assert not widget.advanced.expanded and not _shown(widget.channel)
    job = widget._job(viewer.layers["stack"])
    assert (job["axes"], job["axes_source"], job["channel"]) == ("ZYX", "guessed", None)
    assert job["anisotropy"] == pytest.approx(4.0)
    widget.axes.value = "TYX"  # typed: the engine reports them as given
    job = widget._job(viewer.layers["stack"])
    assert (job["axes"], job["axes_source"]) == ("TYX", None)
    assert "as typed" in widget.status.value and _shown(widget.z_mode) is False
    widget.axes.value = "YX"
    assert widget.status.value.startswith("axes do not fit 'stack' (shape (10, 64, 64)): axes")
    assert "'YX' name 2 axes" in widget.status.value
    assert widget.run() is None and widget.status.value.startswith("error: axes 'YX' name 2")
    assert widget.advanced.expanded  # where the axes are typed
