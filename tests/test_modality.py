"""What the network sees: colour, channels, inversion, the report, and folder batches."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from napari_unet import segment
from napari_unet.cli import main
from napari_unet.common.errors import ShapeError, UserInputError
from napari_unet.common.readers import channel_names, read_image
from napari_unet.inference.images import modality, stains
from napari_unet.inference.images.domain import check_domain
from napari_unet.inference.images.modality import InputChoice


def _nuclei(shape=(96, 96), seed=0) -> np.ndarray:
    """Bright round nuclei on a dark background, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 10.0)
    for _ in range(8):
        cy, cx = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 200
    return (image + rng.normal(0, 3, shape)).clip(0, 255).astype(np.uint8)


def _prepare(image, caxes, colour=False, **kwargs):
    choice = InputChoice(axes=caxes)
    return modality.prepare_input(
        image, caxes, in_channels=1, colour=colour, choice=choice, **kwargs
    )


# -- the decisions -------------------------------------------------------------------------


def test_median_position_separates_dark_and_bright_backgrounds():
    image = _nuclei()
    assert modality.median_position(image) < 0.2
    assert modality.median_position(255 - image) > 0.8
    assert modality.median_position(np.zeros((8, 8))) == 0.0


@pytest.mark.parametrize(
    ("invert", "dark", "inverted"),
    [("auto", False, False), ("auto", True, True), ("yes", False, True), ("no", True, False)],
)
def test_inversion_auto_and_given(invert, dark, inverted):
    image = _nuclei()
    image = 255 - image if dark else image
    seen, _, choice = _prepare(image, "YX", invert=invert)
    assert choice.inverted is inverted
    assert ("given" in choice.invert_reason) == (inverted and invert == "yes")
    if inverted:  # the model sees bright nuclei
        assert modality.median_position(seen) < 0.5 or invert == "yes"


def test_grey_saved_as_colour_is_grey():
    image = _nuclei()
    rgb = np.stack([image] * 3)
    seen, caxes, choice = _prepare(rgb, "CYX", colour=True)
    assert caxes == "YX" and choice.colour == "grey" and not choice.inverted
    np.testing.assert_allclose(seen, image.astype(np.float32))


def test_stained_colour_goes_to_the_haematoxylin_channel():
    """Purple nuclei on a pale pink background: H&E-like colour."""
    nuclei = _nuclei() > 100
    rgb = np.empty((3, *nuclei.shape), np.uint8)
    for c, (fg, bg) in enumerate(((90, 235), (60, 200), (150, 225))):
        rgb[c] = np.where(nuclei, fg, bg)
    assert modality.is_stained(rgb, "CYX")
    seen, caxes, choice = _prepare(rgb, "CYX", colour=True, colour_input="haematoxylin")
    assert choice.colour == "haematoxylin" and choice.modality == "H&E" and caxes == "YX"
    assert seen[nuclei].mean() > seen[~nuclei].mean()  # nuclei bright in the H channel
    # a model without a colour input sees the inverted grey image
    seen, _, choice = _prepare(rgb, "CYX", colour=True)
    assert choice.colour == "luminance" and choice.inverted
    assert seen[nuclei].mean() > seen[~nuclei].mean()


def test_channel_by_index_by_name_and_by_nuclear_name():
    image = _nuclei()
    stack = np.stack([np.zeros_like(image), image])
    _, caxes, choice = _prepare(stack, "CYX", channel=1)
    assert (caxes, choice.channel, choice.channel_reason) == ("YX", 1, "given")
    names = ["GFP", "Hoechst 33342"]
    _, _, choice = _prepare(stack, "CYX", channel="gfp", channel_names=names)
    assert (choice.channel, choice.channel_name) == (0, "GFP")
    _, _, choice = _prepare(stack, "CYX", channel_names=names)
    assert choice.channel == 1 and "nuclear stain" in choice.channel_reason
    with pytest.raises(ShapeError, match=r"2 channels \(0: 'GFP', 1: 'actin'\).*--channel N"):
        _prepare(stack, "CYX", channel_names=["GFP", "actin"])
    with pytest.raises(UserInputError, match="no channel named 'DAPI'"):
        _prepare(stack, "CYX", channel="DAPI", channel_names=names)


def test_domain_warning_on_a_bright_background_and_on_doubt():
    choice = InputChoice(axes="YX")
    assert check_domain(choice, 0.05, 0.05) is None
    assert "darker than the background" in check_domain(choice, 0.9, None)
    assert "--invert yes" in check_domain(choice, 0.9, None)
    assert "unsure of many pixels (object probability 0.2-0.8: 60% of" in check_domain(
        choice, 0.05, 0.6
    )
    he = InputChoice(axes="YXC", colour="optical density", modality="H&E")
    advice = check_domain(he, 0.05, 0.6)
    assert (
        "60% of the number it calls objects" in advice
        and "--invert" not in advice
        and "retrain" in advice
    )


# -- end to end: segment() and the readers ------------------------------------------------


def test_encodings_of_one_image_give_the_same_labels(tiny_model, tmp_path):
    """Grey, an RGB PNG, inverted and a 2-channel TIFF with --channel: the same input."""
    image = _nuclei()
    grey = segment(image, tiny_model, diameter=None)
    path = tmp_path / "rgb.png"
    imsave(path, np.stack([image] * 3, -1), check_contrast=False)
    rgb, axes = read_image(path)
    assert axes == "YXC"
    np.testing.assert_array_equal(segment(rgb, tiny_model, axes=axes, diameter=None), grey)
    stack = np.stack([np.full_like(image, 50), image])
    got = segment(stack, tiny_model, axes="CYX", channel=1, diameter=None)
    np.testing.assert_array_equal(got, grey)
    events = []
    segment(255 - image, tiny_model, diameter=None, progress=events.append)
    report = events[-1].report
    assert events[-1].stage == "done" and report.choice.inverted
    assert report.as_metadata()["choice"]["inverted"] is True


def test_channel_names_from_imagej_and_ome_tiff(tmp_path):
    stack = np.stack([_nuclei(), _nuclei(seed=1)])
    ij = tmp_path / "ij.tif"
    tifffile.imwrite(ij, stack, imagej=True, metadata={"axes": "CYX", "Labels": ["GFP", "DAPI"]})
    assert read_image(ij)[1] == "CYX" and channel_names(ij) == ["GFP", "DAPI"]
    ome = tmp_path / "a.ome.tif"
    tifffile.imwrite(ome, stack, metadata={"axes": "CYX", "Channel": {"Name": ["DNA", "Actin"]}})
    assert channel_names(ome) == ["DNA", "Actin"]
    assert channel_names(tmp_path / "missing.tif") is None


# -- the CLI: one line per image, batches that go on --------------------------------------


def test_cli_line_and_batch_that_goes_on(tiny_model_file, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    image = _nuclei()
    tifffile.imwrite(folder / "a.tif", image)
    imsave(folder / "b.png", np.stack([image] * 3, -1), check_contrast=False)
    tifffile.imwrite(folder / "c.tif", np.stack([image] * 2))  # channels or Z? refused
    (folder / "d.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    args = ["segment", str(folder), "-o", str(out), "--model", str(tiny_model_file)]
    assert main([*args, "--diameter", "none"]) == 2
    err = capsys.readouterr().err
    assert "2 written, 2 failed: c.tif (" in err and "d.tif (" in err
    assert "--skip-existing" in err
    assert "b.png: " in err and "axes YXC" in err and "grey" in err and " s" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "b_labels.tif"]
    # resume: the written ones are skipped, the fixed one is segmented
    tifffile.imwrite(folder / "c.tif", np.stack([image] * 2), imagej=True, metadata={"axes": "CYX"})
    (folder / "d.tif").unlink()
    assert main([*args, "--skip-existing", "--channel", "0", "--diameter", "none"]) == 0
    err = capsys.readouterr().err
    assert "a.tif: skipped" in err and "c.tif: " in err and "channel 0" in err
    assert (out / "c_labels.tif").exists()


def test_haematoxylin_of_a_dask_image_equals_numpy():
    import dask.array as da

    rgb = np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    lazy = stains.haematoxylin(da.from_array(rgb, chunks=(1, 32, 32)), channel_axis=0)
    np.testing.assert_array_equal(lazy.compute(), stains.haematoxylin(rgb, channel_axis=0))
    # a float slide over 1 is read against one white level, not each block's own brightest
    wide = rgb.astype(np.float32)
    wide[:, :32, :32] *= 0.5  # one dim block
    lazy = stains.haematoxylin(da.from_array(wide, chunks=(3, 32, 32)), channel_axis=0)
    np.testing.assert_allclose(
        lazy.compute(), stains.haematoxylin(wide, channel_axis=0), rtol=1e-6, atol=1e-7
    )


def test_global_flags_work_after_the_subcommand(tiny_model_file, tmp_path):
    from napari_unet.cli import build_parser

    image = tmp_path / "a.tif"
    tifffile.imwrite(image, _nuclei())
    args = ["segment", str(image), "-o", str(tmp_path / "o"), "--model", str(tiny_model_file)]
    assert build_parser().parse_args([*args, "-v"]).verbose is True
    assert main([*args, "--diameter", "none", "-v"]) == 0  # was: unrecognized arguments


def test_labels_given_as_the_image_are_said_to_be_labels(tiny_model):
    from skimage.measure import label

    labels = label(_nuclei() > 100).astype(np.uint16)
    events = []
    segment(labels, tiny_model, diameter=None, progress=events.append)
    assert "looks like a label image" in events[-1].report.warning
    events.clear()
    segment(_nuclei(), tiny_model, diameter=None, progress=events.append)
    assert "label image" not in (events[-1].report.warning or "")


def test_channels_are_judged_one_by_one_as_labels_not_across():
    """A grey picture saved as RGBA with a transparent (all 0) alpha is an image; a label
    image saved as RGB is still labels. (Judged across the colour axis, the equal R, G and B
    of a grey picture and its zero alpha looked like a label image.)"""
    from skimage.measure import label

    from napari_unet.common.validate import channels_look_like_labels

    grey = _nuclei()
    rgba = np.stack([grey, grey, grey, np.zeros_like(grey)])
    assert not channels_look_like_labels(rgba, 0)
    assert not channels_look_like_labels(np.moveaxis(rgba, 0, -1), 2)
    labels = label(grey > 100).astype(np.uint8)
    assert channels_look_like_labels(np.stack([labels] * 3 + [np.full_like(labels, 255)]), 0)
    events = []
    segment(np.moveaxis(rgba, 0, -1), axes="YXC", diameter=None, progress=events.append)
    assert "label image" not in (events[-1].report.warning or "")


def test_evaluate_refuses_an_intensity_image_as_ground_truth(tmp_path, capsys):
    from skimage.measure import label

    image = _nuclei()
    for folder, data in (("gt", image), ("pred", label(image > 100).astype(np.uint16))):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", data)
    assert main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert "ground truth" in err and "does not look like a label image" in err  # names its role


def test_noise_is_not_resampled_and_is_said_to_be_noise(tiny_model):
    from napari_unet.inference.images.domain import has_structure

    noise = np.random.default_rng(0).integers(0, 255, (128, 128)).astype(np.uint8)
    assert not has_structure(noise, "YX") and has_structure(_nuclei(), "YX")
    events = []
    segment(noise, tiny_model, progress=events.append)
    assert events[-1].scale == 1.0 and "looks like noise" in events[-1].report.warning


@pytest.mark.parametrize(
    "encode",
    [
        lambda a: a.astype(np.int64) + 2**40,  # precision kept: float64 for 64-bit data
        lambda a: np.where(np.arange(a.size).reshape(a.shape) == 500, 1e30, a).astype(np.float32),
    ],
    ids=["int64-offset", "float-no-data-pixel"],
)
def test_wide_integers_and_outliers_segment_like_the_plain_image(tiny_model, encode):
    image = _nuclei()
    plain = segment(image, tiny_model, diameter=None)
    events = []
    got = segment(encode(image), tiny_model, diameter=None, progress=events.append)
    assert np.mean(got[image > 100] > 0) == pytest.approx(np.mean(plain[image > 100] > 0), abs=0.02)
    assert "noise" not in (events[-1].report.warning or "")


def test_postprocessing_overrides_reach_the_labels_and_bad_ones_are_refused(tiny_model):
    image = _nuclei()
    events = []
    few = segment(image, tiny_model, diameter=None, postprocessing={"min_size": 10**6})
    assert few.max() == 0  # every object is smaller than the minimum size
    with pytest.raises(UserInputError, match="no setting 'seed'"):
        segment(image, tiny_model, postprocessing={"seed": 0.5}, progress=events.append)
    assert events == []  # refused before any work
    with pytest.raises(UserInputError, match="seed_threshold"):
        segment(image, tiny_model, postprocessing={"seed_threshold": 1.5})


def test_optical_density_takes_the_colour_axis_first_or_last():
    """The colour axis first, last (-1) or by its positive index: the same densities (a
    negative axis used to slice the rows instead)."""
    from napari_unet.inference.images.stains import optical_density

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    last = optical_density(rgba, -1)
    assert last.shape == (5, 7, 3)
    np.testing.assert_array_equal(last, optical_density(rgba, 2))
    np.testing.assert_array_equal(
        last, np.moveaxis(optical_density(np.moveaxis(rgba, -1, 0)), 0, -1)
    )
    np.testing.assert_allclose(last[0, 0], -np.log((rgba[0, 0, :3] + 1.0) / 256.0), rtol=1e-6)


def _slide(shape=(40, 48), seed=0) -> np.ndarray:
    """An H&E-like uint8 slide (Y, X, 3) with saturated dark pixels, as real slides have."""
    rng = np.random.default_rng(seed)
    nuclei = _nuclei(shape, seed) > 100
    rgb = np.where(nuclei[..., None], (90, 60, 150), (235, 200, 225)).astype(np.float64)
    rgb = rgb + rng.normal(0, 8, rgb.shape)
    rgb[:3, :3] = 0  # some samples at black: their density depends on the white level
    return rgb.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "encode, white",
    [
        (lambda s: s, 255),
        (lambda s: s.astype(np.uint16) * 257, 65535),  # 16-bit
        (lambda s: np.round(s * (4095 / 255)).astype(np.uint16), 4095),  # a 12-bit camera
        (lambda s: s.astype(np.uint16), 255),  # 8-bit values in a 16-bit file
        (lambda s: s.astype(np.float32) / 255, 1),
        (lambda s: s.astype(np.float32), 255),  # float, 0-255
        (lambda s: s.astype(np.int32), 255),
    ],
)
def test_optical_density_is_the_same_at_any_bit_depth(encode, white):
    """One slide saved as uint8, uint16 (8, 12 or 16 bits), float or int32 gives the model the
    same densities: a 16-bit copy of an H&E slide used to score AP@0.5 0.396 against 0.506,
    because its black samples reached twice the density and moved the normalisation."""
    slide = _slide()
    encoded = encode(slide)
    assert stains.white_level(encoded, -1) == white
    expected = stains.optical_density(slide, -1)
    atol = 0.02 if white == 4095 else 1e-5  # 12 bits: each sample rounded on its own grid
    np.testing.assert_allclose(stains.optical_density(encoded, -1), expected, atol=atol)
    np.testing.assert_allclose(
        stains.haematoxylin(encoded, -1), stains.haematoxylin(slide, -1), atol=max(atol, 1e-5)
    )


def test_the_white_level_of_a_slide_that_is_not_uint8_is_reported():
    slide = np.moveaxis(_slide(), -1, 0)
    _, _, choice = _prepare(slide, "CYX", colour=True, colour_input="optical_density")
    assert choice.white is None and "white" not in choice.describe()
    twelve = np.round(slide * (4095 / 255)).astype(np.uint16)
    seen, _, choice = _prepare(twelve, "CYX", colour=True, colour_input="optical_density")
    assert choice.colour == "optical density" and choice.white == 4095
    np.testing.assert_allclose(seen, stains.optical_density(slide), atol=0.02)
    assert "H&E: optical density (white 4095)" in choice.describe()
    assert choice.as_metadata()["white"] == 4095
    _, _, choice = _prepare(twelve, "CYX", colour=True, colour_input="haematoxylin")
    assert choice.colour == "haematoxylin" and choice.white == 4095
