"""The fitted object-size estimate: its fit, the coarse-to-fine search, the card, the reports."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.segmentation import relabel_sequential

from napari_unet import load_model, save_model, segment
from napari_unet.common.progress import run_to_end
from napari_unet.inference.sizing.rescale import resample
from napari_unet.inference.sizing.size import MIN_RELIABLE, diameter_from_labels, measure_scale_iter
from napari_unet.inference.sizing.size_search import estimate_size_iter, size_model_settings
from napari_unet.training import loop
from napari_unet.training.data.pairs import object_diameters, prepare_pair
from napari_unet.training.finishing.size_fit import fit_size_model, summarize

#: a stage-1 test image (DSB 2018) of 59 nuclei, median equivalent diameter 12.6 px
DSB_ID = "0999dab07b11bc85fb8464fc36c947fbd8b5d6ec49817361cb780659ca805eac"


@pytest.fixture(scope="module")
def nuclei():
    """The built-in model, whose card carries the size model fitted on 32 training images."""
    model = load_model(None)
    assert size_model_settings(model) is not None
    return model


def _estimate(image, model):
    return run_to_end(estimate_size_iter(image, "YX", model, {"device": "cpu"}))


def _disc_image(diameter: float, side: int, seed: int = 0) -> np.ndarray:
    """Bright discs of one diameter on a dark, noisy background, a grid 1.6 diameters apart."""
    rng = np.random.default_rng(seed)
    image = np.full((side, side), 20.0)
    step = int(1.6 * diameter)
    for cy in range(step // 2, side - step // 2 + 1, step):
        for cx in range(step // 2, side - step // 2 + 1, step):
            image[disk((cy, cx), diameter / 2, shape=image.shape)] = 180.0
    return (image + rng.normal(0, 8, image.shape)).astype(np.float32)


# -- the measurement ------------------------------------------------------------------------
def test_diameter_from_labels_counts_whole_objects():
    labels = np.zeros((200, 200), np.int32)
    for i, (cy, cx) in enumerate([(50, 50), (50, 150), (150, 50), (150, 150)], start=1):
        labels[disk((cy, cx), 15, shape=labels.shape)] = i
    labels[0:60, 190:200] = 5  # cut by the border: its size is unknown
    labels[100, 100] = 6  # a speck below min_size
    assert diameter_from_labels(labels, min_size=4) == pytest.approx(30, rel=0.03)
    # fewer than three whole objects: the cut ones count too
    assert diameter_from_labels(labels[:, 100:], min_size=4) == pytest.approx(30, rel=0.2)
    assert diameter_from_labels(labels, min_size=4, min_count=6) is None
    assert diameter_from_labels(np.zeros((8, 8), np.int32)) is None
    ball = np.zeros((40, 40, 40), np.int32)
    zz, yy, xx = np.mgrid[:40, :40, :40]
    ball[(zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2] = 1
    assert diameter_from_labels(ball) == pytest.approx(20, rel=0.05)


# -- the fit ----------------------------------------------------------------------------------
def test_summarize_finds_the_calibration_and_the_reliable_sizes():
    rng = np.random.default_rng(0)
    true = np.repeat(np.geomspace(2, 160, 13), 10)
    measured = true * 0.8 * rng.uniform(0.95, 1.05, true.size)
    # beyond 60 px the objects fall apart into 3 px pieces; below 3 px nothing is found
    measured[true > 60] = 3 * rng.uniform(0.9, 1.1, (true > 60).sum())
    measured[true < 3] = np.nan
    entry = summarize(true, measured, d0=20.0)
    assert entry["calibration"] == pytest.approx(1.25, rel=0.02)
    low, high = entry["reliable"]
    assert low == MIN_RELIABLE  # nothing found below 3 px; and a floor
    assert 40 <= high <= 80  # the sizes that fall apart are not trusted
    assert entry["fit"]["within_tolerance_in_reliable_range"] >= 0.8
    # pieces that look like working-size objects: still only the sizes measured right count
    measured[true > 60] = 13
    assert summarize(true, measured, d0=20.0)["reliable"] == [low, high]


def test_summarize_gives_up_without_measurable_crops():
    true = np.array([10.0, 20.0, 30.0])
    assert summarize(true, np.full(3, np.nan), d0=20.0) is None


def test_fit_on_images_of_known_object_size(tiny_model, monkeypatch):
    """A stand-in network that segments the discs exactly: calibration 1, a wide range."""
    from napari_unet.training.finishing import size_fit

    def perfect(model, image, device="cpu"):
        foreground = image[0] > 0.5
        return np.stack([~foreground, foreground, np.zeros_like(foreground)]).astype(np.float32)

    monkeypatch.setattr(size_fit, "predict_tiled", perfect)
    pairs = []
    for diameter in (14, 18, 22, 26):  # a few images: the fit counts crops per size bin
        image = _disc_image(diameter, 256, seed=diameter)
        pairs.append(prepare_pair(image, ndi.label(image > 100)[0]))
    entry = fit_size_model(tiny_model, pairs, object_diameter=20.0, crop=192)
    assert entry["method"] == "coarse-to-fine instances"
    assert entry["working_diameter"] == 20.0
    assert entry["calibration"] == pytest.approx(1.0, rel=0.1)
    low, high = entry["reliable"]
    assert MIN_RELIABLE <= low < 20 < high
    assert entry["fit"]["crops"] == 36


def test_one_annotated_image_is_enough_to_fit(tiny_model, monkeypatch):
    """A model trained on a single image gets a size model: that image is zoomed to more sizes
    (about MIN_CROPS crops), so every size bin near the working diameter can be judged."""
    from napari_unet.training.finishing import size_fit

    def perfect(model, image, device="cpu"):
        foreground = image[0] > 0.5
        return np.stack([~foreground, foreground, np.zeros_like(foreground)]).astype(np.float32)

    monkeypatch.setattr(size_fit, "predict_tiled", perfect)
    image = _disc_image(20, 256)
    pair = prepare_pair(image, ndi.label(image > 100)[0])
    entry = fit_size_model(tiny_model, [pair], object_diameter=20.0, crop=192)
    assert entry is not None
    assert entry["fit"]["crops"] >= size_fit.MIN_CROPS
    assert entry["calibration"] == pytest.approx(1.0, rel=0.1)
    low, high = entry["reliable"]
    assert low < 20 < high


def test_fit_skips_semantic_unannotated_and_untrained(tiny_model):
    pair = prepare_pair(np.zeros((32, 32), np.float32), np.zeros((32, 32), np.uint16))
    assert fit_size_model(tiny_model, [pair]) is None  # no objects
    image = _disc_image(10, 96)
    pair = prepare_pair(image, ndi.label(image > 100)[0])
    assert fit_size_model(tiny_model, [pair]) is None  # its foreground measures nothing right
    from napari_unet import UNet

    assert fit_size_model(UNet(1, 2, depth=2, base_filters=4), [pair]) is None


# -- the search on images of known object size ------------------------------------------------
@pytest.mark.parametrize(
    ("diameter", "side"), [(8, 128), (12, 192), (30, 256), (60, 384), (90, 512)]
)
def test_discs_of_known_size(nuclei, diameter, side):
    found = _estimate(_disc_image(diameter, side), nuclei)
    assert found.method == "size model"
    assert found.diameter == pytest.approx(diameter, rel=0.25)
    # segmented at a size the model segments well (10-26 px, its working diameter 20 px)
    assert 10 <= found.scale * diameter <= 30


@pytest.mark.parametrize("zoom", [0.5, 1, 2, 4])
def test_dsb_image_resampled_by_known_factors(nuclei, data_dir, zoom):
    folder = data_dir / "dsb2018_stage1_test"
    image = tifffile.imread(folder / "images" / f"{DSB_ID}.tif")
    labels = relabel_sequential(tifffile.imread(folder / "labels" / f"{DSB_ID}.tif"))[0]
    truth = float(np.median(object_diameters(labels))) * zoom
    zoomed = resample(image, (zoom, zoom), order=1)[:512, :512]
    found = _estimate(zoomed, nuclei)
    assert found.diameter == pytest.approx(truth, rel=0.25)


def test_large_textured_nuclei_are_not_taken_for_small_ones(nuclei, data_dir):
    """4x zoom with a speckled interior: at the image's own scale they fall apart."""
    folder = data_dir / "dsb2018_stage1_test"
    image = tifffile.imread(folder / "images" / f"{DSB_ID}.tif").astype(np.float32)
    labels = relabel_sequential(tifffile.imread(folder / "labels" / f"{DSB_ID}.tif"))[0]
    truth = float(np.median(object_diameters(labels))) * 4
    big = resample(image, (4, 4), order=1)[:512, :512]
    texture = np.random.default_rng(0).uniform(0.4, 1.0, (64, 64))
    big = big * resample(texture, (8, 8), order=0)
    found = _estimate(big, nuclei)
    assert found.diameter == pytest.approx(truth, rel=0.25)
    assert found.scale < 0.5


def test_the_pass_that_measured_is_reused(nuclei, monkeypatch):
    """The sample's ~14 px nuclei: a look at a quarter of the scale, then one pass at its own
    scale whose probabilities (and labels) are the segmentation's, not a third pass."""
    from napari_unet.common.sample import load_sample
    from napari_unet.inference import frames
    from napari_unet.inference.tiling import predict as tiling

    image = load_sample()[0]
    pixels = []
    runner = tiling.engine_runner

    def counting(net, engine, dev):  # the pixels each batch runs through the network
        forward = runner(net, engine, dev)

        def counted(x):
            pixels.append(x.shape[0] * x.shape[-1] * x.shape[-2])
            return forward(x)

        return counted

    made = []  # the shapes of the label images post-processed
    chunked = frames.instance_labels_chunked

    def counting_labels(probs, out, **post):
        made.append(probs.shape[1:])
        return chunked(probs, out, **post)

    monkeypatch.setattr(tiling, "engine_runner", counting)
    monkeypatch.setattr(frames, "instance_labels_chunked", counting_labels)
    segment(image, nuclei, diameter=None, device="cpu")
    once = sum(pixels)
    pixels.clear()
    made.clear()
    events = []
    auto = segment(image, nuclei, device="cpu", progress=events.append)
    assert once < sum(pixels) < 1.3 * once
    assert events[-1].scale == 1.0
    # two measuring passes, each post-processed once; the segmentation reuses the second
    assert len(made) == 2 and made[-1] == image.shape
    np.testing.assert_array_equal(auto, segment(image, nuclei, diameter=None, device="cpu"))


# -- models without one, and the card ---------------------------------------------------------
def test_models_without_a_size_model_keep_the_older_measurement(nuclei):
    old = load_model(None)
    old.card.pop("size_model", None)
    image = _disc_image(60, 256)
    found = _estimate(image, old)
    factor, _ = run_to_end(measure_scale_iter(image, "YX", old, {"device": "cpu"}))
    assert found.method == "foreground"
    assert found.scale == factor


@pytest.mark.parametrize(
    "entry",
    [
        {"version": 99},
        {"version": 2, "reliable": "wide"},
        "not a dict",
        {"version": 2, "reliable": [25, 40], "working_diameter": 20, "calibration": 1},
        {"version": 1, "reliable": [6, 40], "working_diameter": 20, "calibration": 1},
    ],
)
def test_an_unusable_entry_is_ignored(entry):
    model = load_model(None)
    model.card["size_model"] = entry
    assert size_model_settings(model) is None
    assert _estimate(_disc_image(20, 128), model).method == "foreground"


def test_the_entry_survives_save_and_load(nuclei, tmp_path):
    path = save_model(nuclei, tmp_path / "m.safetensors")
    assert load_model(path).card["size_model"] == nuclei.card["size_model"]


def test_training_stores_what_the_fit_returns(monkeypatch):
    from napari_unet.training.arrays import train

    calls = []

    def fake_fit(model, pairs, **kwargs):
        calls.append((len(pairs), kwargs))
        return {"method": "fake", "version": 1}

    monkeypatch.setattr(loop, "fit_size_model", fake_fit)
    image = _disc_image(8, 64)
    labels = ndi.label(image > 100)[0].astype(np.uint16)
    result = train(
        [image, image],
        [labels, labels],
        depth=2,
        base_filters=4,
        patch_size=32,
        batch_size=2,
        steps_per_epoch=1,
        epochs=1,
        device="cpu",
        val_fraction=0.5,
    )
    assert result.model.card["size_model"] == {"method": "fake", "version": 1}
    assert calls[0][0] == 2  # the validation image, then the training one
    assert calls[0][1]["object_diameter"] == result.model.card["object_diameter"]


# -- the reports --------------------------------------------------------------------------------
def test_progress_events_carry_the_measured_diameter_and_scale(nuclei):
    image = _disc_image(60, 256)
    events = []
    labels = segment(image, nuclei, device="cpu", progress=events.append)
    final = [e for e in events if e.stage in ("predict", "postprocess")]  # not preparing
    assert {e.scale for e in final} == {final[-1].scale}
    assert final[-1].scale < 0.5
    assert final[-1].diameter == pytest.approx(60, rel=0.25)
    assert labels.max() >= 4  # a 2x2 grid of discs
    given = []
    segment(image, nuclei, diameter=60, device="cpu", progress=given.append)
    assert {e.diameter for e in given if e.stage in ("predict", "postprocess")} == {60}


def test_a_fine_tune_without_data_to_refit_keeps_its_parents_size_model(monkeypatch):
    from napari_unet import UNet
    from napari_unet.training.arrays import train

    fits = []  # the number of pairs of each fit
    monkeypatch.setattr(
        loop, "fit_size_model", lambda model, pairs, **kwargs: fits.append(len(pairs))
    )
    image = _disc_image(8, 64)
    labels = ndi.label(image > 100)[0].astype(np.uint16)
    parent = UNet(1, 3, depth=2, base_filters=4)
    entry = {"method": "coarse-to-fine instances", "version": 2, "working_diameter": 8.0,
             "calibration": 1.0, "reliable": [6.0, 16.0]}  # fmt: skip
    parent.card.update(task="instance", object_diameter=8.0, size_model=dict(entry))
    result = train([image], [labels], model=parent, patch_size=32, batch_size=2,
                   steps_per_epoch=1, epochs=1, device="cpu")  # fmt: skip
    kept = result.model.card["size_model"]
    assert kept["kept_from_parent"] is True
    assert {k: kept[k] for k in entry} == entry
    assert fits == []  # one image: not refitted (a fit on it is noisier than the parent's)
    train([image] * 3, [labels] * 3, model=parent, patch_size=32, batch_size=2,
          steps_per_epoch=1, epochs=1, device="cpu")  # fmt: skip
    assert fits == [3]  # enough images to refit (here the fit fails, and the parent's is kept)
    # a parent fitted for another working size has nothing to pass on
    parent.card.update(object_diameter=12.0)
    result = train([image], [labels], model=parent, patch_size=32, batch_size=2,
                   steps_per_epoch=1, epochs=1, device="cpu")  # fmt: skip
    assert "size_model" not in result.model.card
