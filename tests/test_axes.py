"""Axes strings: parsing, guessing, canonical order and the frames a model takes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.common.errors import ShapeError, UserInputError
from napari_unet.inference.images import axes as ax


@pytest.mark.parametrize("text", ["yx", " ZYX ", "TCZYX", "YXC", "tcyx"])
def test_parse_axes_accepts_and_uppercases(text):
    assert ax.parse_axes(text) == text.strip().upper()


@pytest.mark.parametrize(
    ("text", "ndim", "match"),
    [
        ("YQ", None, "unknown letter"),
        ("YYX", None, "more than once"),
        ("ZY", None, "both Y and X"),
        ("ZYX", 2, "2 dimension"),
        (3, None, "must be a string"),
    ],
)
def test_parse_axes_rejects_with_reason(text, ndim, match):
    with pytest.raises(UserInputError, match=match):
        ax.parse_axes(text, ndim)


@pytest.mark.parametrize(
    ("shape", "kwargs", "expected"),
    [
        ((64, 64), {}, "YX"),
        ((5, 64, 64), {}, "ZYX"),
        ((3, 64, 64), {"in_channels": 3}, "CYX"),
        ((3, 64, 64), {"in_channels": 3, "model_ndim": 3}, "ZYX"),
        ((64, 64, 3), {"rgb": True}, "YXC"),
        ((64, 64, 3), {"in_channels": 3}, "YXC"),
        ((8, 6, 64, 64), {}, "TZYX"),
        ((64, 64, 3), {}, "YXC"),  # colour, whatever the model takes
        ((64, 80, 4), {}, "YXC"),  # RGBA
        ((5, 64, 64, 3), {}, "ZYXC"),
        ((2, 64, 64), {"model_ndim": 3}, "ZYX"),  # a 3D model takes Z stacks
        ((4, 2, 64, 64), {"in_channels": 2}, "TCYX"),
        ((5, 64, 64), {"axis_labels": ("t", "y", "x")}, "TYX"),
        ((5, 64, 64), {"axis_labels": ("-3", "-2", "-1")}, "ZYX"),  # napari's defaults
        ((7, 5, 64, 64), {"axis_labels": ("time", "Z", "Y", "X")}, "TZYX"),  # not letters
        ((64, 64, 3), {"rgb": True, "axis_labels": ("y", "x")}, "YXC"),
    ],
)
def test_guess_axes(shape, kwargs, expected):
    assert ax.guess_axes(shape, **kwargs) == expected


@pytest.mark.parametrize("shape", [(2, 64, 64), (3, 520, 696), (4, 64, 64), (4, 5, 64, 64)])
def test_guess_axes_refuses_channels_or_z(shape):
    """A short unlabelled leading axis may be channels or Z: never silently Z."""
    with pytest.raises(ax.AmbiguousAxesError, match=r"channels or Z.*--axes C"):
        ax.guess_axes(shape)


@pytest.mark.parametrize(
    ("shape", "axes"), [((128, 128, 2), "YXC"), ((16, 300, 2), "YXC"), ((9, 64, 64, 2), "ZYXC")]
)
def test_guess_axes_refuses_channels_stored_last(shape, axes):
    """(128, 128, 2) is two interleaved channels, never 128 slices of 128 x 2 pixels."""
    with pytest.raises(ax.AmbiguousAxesError, match=rf"channels stored last.*--axes {axes}"):
        ax.guess_axes(shape)


def test_one_channel_stored_last_is_read_as_a_channel():
    assert ax.guess_axes((520, 696, 1)) == "YXC"


def test_is_colour_needs_a_trailing_colour_axis():
    assert ax.is_colour("YXC", (64, 64, 3))
    assert not ax.is_colour("CYX", (3, 64, 64))
    assert not ax.is_colour("YXC", (64, 64, 2))


def test_guess_axes_refuses_what_it_cannot_guess():
    with pytest.raises(ShapeError, match="at least two axes"):
        ax.guess_axes((64,))
    with pytest.raises(ShapeError, match="pass them explicitly"):
        ax.guess_axes((2, 2, 2, 2, 64, 64))


def test_to_canonical_and_back_round_trips():
    image = np.arange(2 * 3 * 4 * 5).reshape(4, 5, 3, 2)  # Y X C T
    canon, caxes = ax.to_canonical(image, "YXCT")
    assert caxes == "TCYX"
    assert canon.shape == (2, 3, 4, 5)
    assert canon[1, 2, 3, 4] == image[3, 4, 2, 1]
    labels = canon[:, 0]  # canonical labels (T, Y, X)
    back = ax.from_canonical(labels, caxes, "YXCT")
    assert back.shape == (4, 5, 2)
    np.testing.assert_array_equal(back, image[:, :, 0, :])
    probs = np.stack([labels, labels + 1])  # (K, T, Y, X)
    assert ax.from_canonical(probs, caxes, "YXCT", leading=1).shape == (2, 4, 5, 2)


def test_frames_of_a_2d_model_walk_time_and_z():
    image = np.zeros((2, 3, 4, 8, 9))  # T C Z Y X
    indices = ax.frame_indices(image.shape, "TCZYX", model_ndim=2)
    assert len(indices) == 2 * 4
    assert indices[5] == (1, 1)
    frame = ax.frame(np.arange(image.size).reshape(image.shape), "TCZYX", (1, 2))
    assert frame.shape == (3, 8, 9)
    assert frame[0, 0, 0] == np.ravel_multi_index((1, 0, 2, 0, 0), image.shape)


def test_frames_of_a_3d_model_walk_time_only_and_add_channels():
    image = np.zeros((2, 4, 8, 9))  # T Z Y X
    assert ax.frame_indices(image.shape, "TZYX", model_ndim=3) == [(0,), (1,)]
    assert ax.frame(image, "TZYX", (1,)).shape == (1, 4, 8, 9)
    assert ax.frame_indices((8, 9), "YX", model_ndim=2) == [()]
    assert ax.frame(np.zeros((8, 9)), "YX", ()).shape == (1, 8, 9)


def test_check_model_fit_explains_mismatches():
    with pytest.raises(ShapeError, match=r"takes 1 input channel.*has 3.*pick one channel"):
        ax.check_model_fit((3, 8, 8), "CYX", in_channels=1, model_ndim=2)
    with pytest.raises(ShapeError, match=r"takes 2 input channel.*no C axis"):
        ax.check_model_fit((8, 8), "YX", in_channels=2, model_ndim=2)
    with pytest.raises(ShapeError, match="3D model and needs a Z axis"):
        ax.check_model_fit((5, 8, 8), "TYX", in_channels=1, model_ndim=3)
    ax.check_model_fit((2, 5, 8, 8), "CZYX", in_channels=2, model_ndim=3)  # fits: no error


def test_ome_metadata_that_does_not_fit_its_pages_is_set_aside_and_said(tmp_path, caplog):
    """An OME-TIFF whose OME-XML counts 3 channels over 2 pages: tifffile would add a zeroed
    channel; the reader reads the 2 pages as they are, without the OME axes, and says why."""
    import tifffile

    from napari_unet.common.readers import read_image

    pages = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    tifffile.imwrite(tmp_path / "good.ome.tif", pages, ome=True, metadata={"axes": "CYX"})
    data = (tmp_path / "good.ome.tif").read_bytes()
    assert data.count(b'SizeC="2"') == 1
    (tmp_path / "bad.ome.tif").write_bytes(data.replace(b'SizeC="2"', b'SizeC="3"'))

    image, axes = read_image(tmp_path / "good.ome.tif")
    assert axes == "CYX" and not caplog.text
    image, axes = read_image(tmp_path / "bad.ome.tif")
    np.testing.assert_array_equal(image, pages)  # no zeroed third channel
    assert axes is None
    assert "its OME metadata does not fit its pages (OME series is missing 1 frames)" in caplog.text
    assert "--axes" in caplog.text and "zeroed" not in caplog.text


@pytest.mark.parametrize("ome", [False, True])
def test_an_rgb_tiff_stored_plane_by_plane_is_read_as_colour(tmp_path, ome):
    """An RGB TIFF in planar configuration 2 (tifffile: axes SYX) is colour, its samples last,
    as the same picture stored pixel by pixel; a 3-channel grey TIFF stays 3 channels."""
    import tifffile

    from napari_unet.common.readers import read_image

    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    name = "planar.ome.tif" if ome else "planar.tif"
    tifffile.imwrite(tmp_path / name, np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")  # fmt: skip
    tifffile.imwrite(tmp_path / "chunky.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "grey.tif", np.moveaxis(rgb, -1, 0), photometric="minisblack")

    image, axes = read_image(tmp_path / name)
    assert axes == "YXC" and ax.is_colour(axes, image.shape)
    np.testing.assert_array_equal(image, read_image(tmp_path / "chunky.tif")[0])
    image, axes = read_image(tmp_path / "grey.tif")
    assert image.shape == (3, 12, 10) and axes != "YXC"
