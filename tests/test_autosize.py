"""Automatic object size: the diameter estimate, the model's range, and segment(diameter="auto")."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from napari_unet import load_model, segment
from napari_unet.common.errors import UserInputError
from napari_unet.common.progress import run_to_end
from napari_unet.common.sample import load_sample
from napari_unet.inference.sizing import size as autosize
from napari_unet.inference.sizing.rescale import resample
from napari_unet.inference.sizing.size import (
    EDT_TO_DIAMETER,
    auto_scale_iter,
    comfortable_range,
    diameter_from_foreground,
)
from napari_unet.metrics import average_precision


def _discs(diameter: int, shape=(300, 300), spacing=None) -> np.ndarray:
    """A grid of separate discs of one diameter."""
    mask = np.zeros(shape, bool)
    step = spacing or 2 * diameter
    for cy in range(step // 2, shape[0] - diameter // 2, step):
        for cx in range(step // 2, shape[1] - diameter // 2, step):
            mask[disk((cy, cx), diameter / 2, shape=shape)] = True
    return mask


@pytest.mark.parametrize("diameter", [8, 20, 50])
def test_diameter_from_foreground_measures_discs(diameter):
    got = diameter_from_foreground(_discs(diameter))
    # inscribed disc = the disc itself; the constant converts to elongated nuclei's scale
    assert got == pytest.approx(diameter / EDT_TO_DIAMETER, rel=0.12)


def test_diameter_from_foreground_survives_merges_and_ignores_specks():
    mask = _discs(20, spacing=19)  # neighbours overlap: one connected foreground
    assert diameter_from_foreground(mask) == pytest.approx(20 / EDT_TO_DIAMETER, rel=0.15)
    specks = np.zeros((50, 50), bool)
    specks[::7, ::7] = True
    assert diameter_from_foreground(specks) is None
    assert diameter_from_foreground(np.zeros((10, 10), bool)) is None


def test_comfortable_range_comes_from_the_card():
    model = load_model(None)
    low, high = comfortable_range(model)
    d0 = model.card["object_diameter"]
    zoom = model.card["provenance"]["training"]["augment"]["zoom"]
    assert (low, high) == pytest.approx((d0 * min(zoom), d0 * max(zoom)))


def test_no_range_without_object_diameter(tiny_model):
    assert "object_diameter" not in tiny_model.card
    assert comfortable_range(tiny_model) is None
    image = np.random.default_rng(0).random((40, 40), np.float32)
    assert run_to_end(auto_scale_iter(image, "YX", tiny_model, {})) == 1.0


@pytest.fixture(scope="module")
def nuclei():
    """The built-in network without its size model: the measurement older models get."""
    model = load_model(None)
    model.card.pop("size_model")
    return model, *load_sample()


def test_objects_in_range_are_not_resampled(nuclei):
    model, image, _ = nuclei
    factor = run_to_end(auto_scale_iter(image, "YX", model, {"device": "cpu"}))
    assert factor == 1.0
    np.testing.assert_array_equal(
        segment(image, model, device="cpu"), segment(image, model, diameter=None, device="cpu")
    )


def test_measuring_pass_is_reused_when_nothing_is_resampled(nuclei, monkeypatch):
    """In range and small enough to measure whole: the image is predicted once, not twice."""
    from napari_unet.inference.tiling import predict as tiling

    model, image, _ = nuclei
    calls = []
    runner = tiling.engine_runner

    def counting(net, engine, dev):  # counts the tiles each batch runs through the network
        forward = runner(net, engine, dev)

        def counted(x):
            calls.append(x.shape[0])
            return forward(x)

        return counted

    monkeypatch.setattr(tiling, "engine_runner", counting)
    plain = segment(image, model, diameter=None, device="cpu")
    tiles_once = sum(calls)
    calls.clear()
    events = []
    auto = segment(image, model, device="cpu", progress=events.append)
    assert sum(calls) == tiles_once
    np.testing.assert_array_equal(auto, plain)
    assert {e.scale for e in events} == {1.0}
    stages = [e.stage for e in events]
    # the measuring pass's probabilities are reused: its last stage is the (counted) predict
    # pass over them, then the post-processing steps
    assert [s for s in stages if s not in ("postprocess", "done")][-1] == "predict"
    assert stages[-2:] == ["postprocess", "done"]  # then the run's report


def test_large_nuclei_are_shrunk_into_range(nuclei):
    model, image, labels = nuclei
    quarter = (slice(0, 130), slice(0, 174))
    zoom = 6.0  # the sample's ~14 px nuclei become ~84 px, twice the model's largest (40 px)
    big = resample(image[quarter], (zoom, zoom), order=1)
    big_truth = resample(labels[quarter], (zoom, zoom), order=0)
    events = []
    factor = run_to_end(auto_scale_iter(big, "YX", model, {"device": "cpu"}), events.append)
    assert {e.stage for e in events} == {"measuring objects"}
    # it shrinks them to the top of the range (40 px): by about 40 / 55, not all the way back
    assert 1 / zoom < factor < 0.9
    events = []
    auto = segment(big, model, device="cpu", progress=events.append)
    assert auto.shape == big.shape
    # the segmenting passes report the factor they run at (the widget shows it)
    assert {e.scale for e in events if e.stage in ("predict", "postprocess")} == {factor}
    plain = segment(big, model, diameter=None, device="cpu")
    ap_auto = average_precision(big_truth, auto).scores[0]
    ap_plain = average_precision(big_truth, plain).scores[0]
    assert ap_auto > ap_plain + 0.1  # measured: 0.89 vs 0.56


def test_explicit_scale_wins_over_auto(nuclei, monkeypatch):
    model, image, _ = nuclei

    def fail(*args, **kwargs):
        raise AssertionError("auto size must not run when a scale is given")

    monkeypatch.setattr("napari_unet.inference.pipeline.estimate_size_iter", fail)
    out = segment(image, model, scale=0.5, device="cpu")
    assert out.shape == image.shape


def test_measuring_crop_is_bounded(monkeypatch):
    monkeypatch.setattr(autosize, "CROP", 64)
    canon = np.zeros((3, 2, 200, 100), np.float32)  # T C Y X
    crop = autosize._central_crop(canon, "TCYX", model_ndim=2)
    assert crop.shape == (1, 2, 64, 64)


def test_bad_diameter_is_named():
    model = load_model(None)
    with pytest.raises(UserInputError, match="'auto' or None"):
        segment(np.zeros((32, 32), np.float32), model, diameter="big")
