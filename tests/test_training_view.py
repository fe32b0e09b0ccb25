"""Training images are learnt as Segment will show them to the network: brightfield inverted,
stained colour slides as their optical density for a model that takes that (``nuclei-he``).

Found by fine-tuning ``nuclei-he`` through ``train()`` on the raw colours of one H&E slide:
Segment then showed the model the slides' optical density, and it scored AP@0.5 0.00 on the
other slides."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet import load_model
from napari_unet.cli import main
from napari_unet.inference.images import stains
from napari_unet.inference.pipeline import model_input
from napari_unet.model.files import save_model
from napari_unet.model.unet import UNet
from napari_unet.training.arrays import segment_view
from napari_unet.training.config import TrainConfig
from napari_unet.training.data.view import as_segment_sees, describe_views

HE = "1d9eacb3161f1e2b45550389ecf7c535c7199c6b44b1c6a46303f7b965e508f1"  # a 524x348 test slide


@pytest.fixture(scope="module")
def slide(data_dir):
    """A 96x96 crop of a stage-1 test H&E slide (uint8 RGB) and its labels."""
    folder = data_dir / "dsb2018_stage1_test"
    rgb = tifffile.imread(folder / "images" / f"{HE}.tif")[100:196, 100:196, :3]
    labels = tifffile.imread(folder / "labels" / f"{HE}.tif")[100:196, 100:196]
    return np.ascontiguousarray(rgb), labels


def _bright_background(seed=0):
    """Dark round nuclei on a bright background (brightfield-like), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    image = np.full((64, 64), 220.0)
    for cy, cx in ((16, 16), (40, 44), (20, 48)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 40] = 60
    return (image + rng.normal(0, 3, image.shape)).clip(0, 255).astype(np.uint8)


def test_a_colour_slide_for_nuclei_he_is_its_optical_density_as_segment_shows_it(slide):
    rgb, _ = slide
    he = load_model("nuclei-he")
    seen, said = segment_view([rgb], TrainConfig(), he)
    expected = model_input(rgb, he)[0]  # what Segment (and the dock's Retrain) shows it
    assert seen[0].shape == (3, 96, 96)
    np.testing.assert_allclose(seen[0], expected, rtol=1e-6)
    np.testing.assert_allclose(seen[0], np.moveaxis(stains.optical_density(rgb, -1), -1, 0))
    assert (
        said
        == "as Segment shows them to the network: 1 of 1 stained colour image(s) as optical density"
    )


def test_a_new_network_learns_colour_as_it_is_and_views_are_not_applied_twice(slide):
    rgb, _ = slide
    seen, views = as_segment_sees([rgb], ndim=2)  # a new network: raw colour, as Segment gives it
    assert seen[0] is rgb and views == [""]
    # an image already as the network sees it (the dock's Retrain) is left alone
    density = np.moveaxis(stains.optical_density(rgb, -1), -1, 0)
    seen, views = as_segment_sees([density], ndim=2, in_channels=3, colour_input="optical_density")
    assert seen[0] is density and views == [""]


def test_brightfield_is_learnt_inverted_and_fluorescence_as_it_is():
    dark_nuclei, bright_nuclei = _bright_background(), 255 - _bright_background(1)
    seen, views = as_segment_sees([dark_nuclei, bright_nuclei], ndim=2, in_channels=1)
    np.testing.assert_array_equal(seen[0], -dark_nuclei.astype(np.float32))
    assert views[0].startswith("inverted (bright background, median at")
    assert seen[1] is bright_nuclei and views[1] == ""
    # inverted once, not twice: the negated image has a dark background
    again, views = as_segment_sees([seen[0]], ndim=2, in_channels=1)
    assert again[0] is seen[0] and views == [""]
    assert describe_views(["inverted (x)", ""]) == (
        "as Segment shows them to the network: 1 of 2 image(s) inverted (bright background)"
    )


def test_cli_fine_tune_of_a_colour_model_learns_the_optical_density(slide, tmp_path, capsys):
    """``train --init`` a model whose card takes optical density, on RGB files: the CLI says
    that it learns their optical density, and the new model keeps taking it."""
    rgb, labels = slide
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    tifffile.imwrite(tmp_path / "images" / "s.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "labels" / "s.tif", labels)
    parent = UNet(3, 3, depth=2, base_filters=4)
    parent.card["colour_input"] = "optical_density"
    save_model(parent, tmp_path / "parent.safetensors", task="instance")
    argv = [
        "train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
        "--init", str(tmp_path / "parent.safetensors"), "-o", str(tmp_path / "m.safetensors"),
        "--epochs", "1", "--steps-per-epoch", "2", "--patch", "32", "--batch", "2",
        "--device", "cpu", "--no-tune", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "training images as Segment shows them to the network: 1 of 1 stained colour image(s) "
        "as optical density" in err
    )
    assert load_model(tmp_path / "m.safetensors").card["colour_input"] == "optical_density"


def test_a_colour_image_for_a_single_channel_model_is_made_grey_as_segment_does(slide):
    """Fine-tuning the nuclei model on a colour image: the grey image Segment would give it
    (here a stained slide: its luminance, inverted), not three channels it cannot take."""
    rgb, _ = slide
    nuclei = load_model("nuclei")
    seen, said = segment_view([rgb], TrainConfig(), nuclei)
    expected = model_input(rgb, nuclei)[0]
    assert seen[0].shape == (96, 96)
    np.testing.assert_allclose(seen[0], expected)
    assert "1 of 1 colour image(s) made grey (luminance)" in said
    assert "1 of 1 image(s) inverted (bright background)" in said
