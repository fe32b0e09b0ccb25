"""segment() / segment_iter(): axes, normalisation, dask/zarr, cancel and bad inputs.

The oracle is a U-Net whose forward pass is replaced by a threshold: normalised intensity
above 0.5 is "interior", below is "background". Its instance labels must then be exactly the
connected components of the bright blobs, whatever the axes, dtype, tiling or chunking.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage as ndi
from skimage.draw import disk

from napari_unet import UNet, segment
from napari_unet.common.errors import ModelFileError, ShapeError, UserInputError
from napari_unet.inference.pipeline import SegmentProgress, segment_iter


class ThresholdNet(UNet):
    """Interior where the normalised input is above 0.5 (first channel), else background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :1]
        return torch.cat([8 * (0.5 - v), 8 * (v - 0.5), torch.full_like(v, -30.0)], dim=1)


@pytest.fixture
def net():
    model = ThresholdNet(1, 3, depth=2, base_filters=4).eval()
    model.card = {"task": "instance", "normalization": {"method": "minmax"}}
    return model


def _blobs(shape=(150, 170), seed=0) -> np.ndarray:
    """A uint8 image of separated bright discs."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, 10, np.uint8)
    for cy in range(12, shape[0] - 8, 25):
        for cx in range(12, shape[1] - 8, 25):
            rr, cc = disk(
                (cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)),
                rng.integers(4, 9),
                shape=shape,
            )
            image[rr, cc] = 200
    return image


def _expected(image: np.ndarray) -> int:
    return ndi.label(image > 100)[1]


def _same_partition(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return np.array_equal(a == 0, b == 0) and pairs.shape[1] == len(np.unique(a)) == len(
        np.unique(b)
    )


def test_instance_labels_are_the_blobs(net):
    image = _blobs()
    labels = segment(image, net, tile_shape=64, overlap=16)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert _same_partition(labels, ndi.label(image > 100)[0])


@pytest.mark.parametrize(
    "convert",
    [
        lambda im: im.astype(np.uint16) * 300,
        lambda im: im.astype(np.float32) / 255,
        lambda im: im.astype(np.float64) * 1e6,
        lambda im: im.astype(np.int32) - 1000,  # negative values
        lambda im: im > 100,  # boolean
    ],
)
def test_any_intensity_type_gives_the_same_labels(net, convert):
    image = _blobs()
    assert _same_partition(segment(convert(image), net), segment(image, net))


@pytest.mark.parametrize(
    ("axes", "make"),
    [
        ("TYX", lambda im: np.stack([im, im[::-1]])),
        ("ZYX", lambda im: np.stack([im, im[:, ::-1], im])),
        ("YXT", lambda im: np.stack([im, im[::-1]], axis=-1)),
        ("TZYX", lambda im: np.stack([np.stack([im, im])] * 2)),
    ],
)
def test_frames_and_slices_are_segmented_one_by_one(net, axes, make):
    image = _blobs((60, 70))
    stack = make(image)
    labels = segment(stack, net, axes=axes)
    assert labels.shape == stack.shape
    t_axis = axes.index("T") if "T" in axes else 0
    for k in range(stack.shape[t_axis]):
        frame = np.take(stack, k, axis=t_axis)
        got = np.take(labels, k, axis=t_axis)
        if frame.ndim == 2:
            assert _same_partition(got, ndi.label(frame > 100)[0])


def test_channels_feed_the_model_and_rgb_axes_last(net):
    rgb_net = ThresholdNet(3, 3, depth=2, base_filters=4).eval()
    rgb_net.card = {"task": "instance", "normalization": {"method": "minmax"}}
    image = _blobs((60, 70))
    rgb = np.stack([image, image // 2, image // 3], axis=-1)
    labels = segment(rgb, rgb_net)  # axes guessed: YXC
    assert labels.shape == (60, 70)
    assert _same_partition(labels, ndi.label(image > 100)[0])
    tcyx = np.stack([np.moveaxis(rgb, -1, 0)] * 2)
    assert segment(tcyx, rgb_net, axes="TCYX").shape == (2, 60, 70)
    # a single-channel model: colour becomes grey, separate channels need a choice
    events = []
    grey = segment(rgb, net, axes="YXC", progress=events.append)
    assert _same_partition(grey, ndi.label(image > 100)[0])
    assert events[-1].report.choice.colour == "luminance"
    with pytest.raises(ShapeError, match=r"has 3 channels.*--channel N"):
        segment(np.moveaxis(rgb, -1, 0), net, axes="CYX")
    assert _same_partition(segment(np.moveaxis(rgb, -1, 0), net, axes="CYX", channel=0), grey)


def test_3d_model_takes_the_volume():
    net3 = ThresholdNet(1, 3, ndim=3, depth=1, base_filters=2).eval()
    net3.card = {"task": "instance", "normalization": {"method": "minmax"}}
    volume = np.zeros((8, 30, 30), np.uint8)
    volume[2:6, 5:12, 5:12] = 200
    volume[2:6, 15:25, 15:25] = 200
    labels = segment(volume, net3, axes="ZYX")
    assert labels.shape == volume.shape and labels.max() == 2
    with pytest.raises(ShapeError, match="needs a Z axis"):
        segment(volume[0], net3)


def test_semantic_and_probability_outputs(net):
    image = _blobs((60, 70))
    semantic = segment(image, net, output="semantic")
    np.testing.assert_array_equal(semantic, (image > 100).astype(np.int32))
    probs = segment(image, net, output="probabilities")
    assert probs.shape == (3, 60, 70) and probs.dtype == np.float32
    labels, probs2 = segment(image, net, return_probabilities=True)
    np.testing.assert_allclose(probs2, probs)
    assert labels.max() == _expected(image)


def test_dask_and_zarr_round_trip_keep_objects_across_chunks(net, tmp_path):
    image = _blobs((300, 340))
    image[140:150, 10:330] = 200  # a bar that crosses every chunk border along X
    expected = segment(image, net)
    store = zarr.open_array(
        tmp_path / "in.zarr", mode="w", shape=image.shape, chunks=(100, 100), dtype="u1"
    )
    store[:] = image
    for source in (store, da.from_array(image, chunks=(100, 100))):
        out = tmp_path / f"out-{type(source).__name__}.zarr"
        labels = segment(source, net, tile_shape=64, overlap=16, out=out)
        assert isinstance(labels, da.Array)
        assert _same_partition(labels.compute(), expected)
        assert len(np.unique(labels[140:150, 10:330].compute())) == 1
        np.testing.assert_array_equal(zarr.open_array(out, mode="r")[:], labels.compute())


def test_events_count_every_batch_and_close_cancels(net, tmp_path):
    image = _blobs((256, 256))
    gen = segment_iter(image, net, tile_shape=32, overlap=8, batch_size=2)
    first = next(gen)
    assert isinstance(first, SegmentProgress) and first.stage == "predict"
    assert first.done == 2 and first.total > 20
    gen.close()  # cancel: the rest never runs
    with pytest.raises(StopIteration):
        next(gen)
    events = []
    segment(image, net, tile_shape=64, overlap=8, batch_size=1, progress=events.append)
    done = [e.done for e in events if e.stage == "predict"]
    assert done == list(range(1, events[0].total + 1))


def test_cancelled_dask_run_leaves_no_temporary_store(net, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gen = segment_iter(da.from_array(_blobs((200, 200)), chunks=(100, 100)), net, tile_shape=32)
    next(gen)
    assert len(list(tmp_path.iterdir())) == 2  # labels and probabilities stores
    gen.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("probabilities", [False, True])
def test_temporary_stores_go_with_the_results(net, tmp_path, monkeypatch, probabilities):
    import gc
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    image = da.from_array(_blobs((200, 200)), chunks=(100, 100))
    result = segment(image, net, tile_shape=32, return_probabilities=probabilities)
    labels = result[0] if probabilities else result
    # the probabilities store is gone unless asked for; the labels read from theirs
    assert len(list(tmp_path.iterdir())) == (2 if probabilities else 1)
    view = labels[50:150]  # a derived array keeps the store alive
    del result, labels
    gc.collect()
    assert int(view.max().compute()) >= 0
    assert len(list(tmp_path.iterdir())) >= 1
    del view
    gc.collect()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("blockwise", [False, True])
def test_kept_probabilities_beside_a_zarr_output_are_temporary(
    net, tmp_path, monkeypatch, blockwise
):
    """``out=`` with ``return_probabilities``: the labels stay, the probabilities' temporary
    store goes with the result (tiles in 2D, blocks in 3D)."""
    import gc
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    if blockwise:
        image = da.from_array(np.stack([_blobs((64, 64))] * 8), chunks=(8, 32, 32))
        kwargs = {"axes": "ZYX", "z_mode": "3d", "block": (8, 32, 32)}
    else:
        image, kwargs = da.from_array(_blobs((200, 200)), chunks=(100, 100)), {"tile_shape": 32}
    out = tmp_path / "result_labels.zarr"
    labels, probs = segment(image, net, out=out, return_probabilities=True, **kwargs)
    assert out.is_dir() and len(list(scratch.iterdir())) == 1  # the probabilities' store
    assert probs.shape[1:] == labels.shape
    del labels, probs
    gc.collect()
    assert list(scratch.iterdir()) == [] and out.is_dir()


def test_constant_and_tiny_images(net):
    for value in (0, 255):
        labels = segment(np.full((40, 50), value, np.uint8), net)
        assert labels.shape == (40, 50) and labels.max() == 0
    tiny = np.zeros((7, 9), np.uint8)
    tiny[2:5, 3:7] = 200
    labels = segment(tiny, net, min_size=1)  # smaller than any tile
    assert labels.shape == (7, 9)
    assert _same_partition(labels, ndi.label(tiny > 100)[0])


@pytest.mark.parametrize(
    ("image", "kwargs", "error", "match"),
    [
        (np.full((20, 20), np.nan), {}, UserInputError, "NaN"),
        (np.where(np.eye(20) > 0, np.inf, 0.0), {}, UserInputError, "NaN or infinite"),
        (np.zeros(20), {}, ShapeError, "at least two axes"),
        (np.zeros((20, 20)), {"axes": "ZYX"}, ShapeError, "2 dimension"),
        (np.zeros((2, 2, 2, 2, 20, 20)), {}, ShapeError, "pass them explicitly"),
        (np.zeros((20, 20), complex), {}, UserInputError, "dtype"),
        (np.zeros((20, 20)), {"output": "labels"}, UserInputError, "output must be one of"),
        (None, {}, UserInputError, "image is None"),
        ("in/good.tif", {}, UserInputError, "image is a path"),
        ([np.zeros((20, 20)), np.zeros((10, 10))], {}, UserInputError, "must be one array"),
        (np.zeros((20, 20)), {"postprocessing": [1, 2]}, UserInputError, "must be a dict"),
        (np.zeros((20, 20, 2)), {"axes": "YXC", "channel": 0.5}, UserInputError, "whole index"),
    ],
)
def test_bad_inputs_give_clear_errors(net, image, kwargs, error, match):
    with pytest.raises(error, match=match):
        segment(image, net, **kwargs)


def test_a_model_that_is_not_one_is_named(net):
    with pytest.raises(UserInputError, match="model must be a UNet, a model file path"):
        segment(np.zeros((20, 20)), 42)


def test_nan_in_a_dask_image_is_reported(net):
    image = _blobs((200, 200)).astype(np.float32)
    image[150, 150] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        segment(da.from_array(image, chunks=(100, 100)), net)


def test_instance_output_needs_an_instance_model():
    semantic = UNet(1, 2, depth=2, base_filters=4).eval()
    with pytest.raises(UserInputError, match="output='semantic'"):
        segment(np.zeros((32, 32)), semantic, output="instance")
    assert segment(np.zeros((32, 32)), semantic).shape == (32, 32)  # default: the model's task


def test_model_files(tiny_model, tiny_model_file, tmp_path):
    image = _blobs((64, 64))
    from_file = segment(image, tiny_model_file, output="probabilities")
    np.testing.assert_allclose(
        from_file, segment(image, tiny_model, output="probabilities"), atol=1e-5
    )
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(tiny_model_file.read_bytes()[:200])
    with pytest.raises(ModelFileError):
        segment(image, corrupt)


def test_missing_builtin_model_says_how_to_pass_one(tmp_path, monkeypatch):
    from napari_unet.inference.pipeline import builtin_model
    from napari_unet.model import files as model_io

    monkeypatch.setattr(model_io.resources, "files", lambda package: tmp_path)
    builtin_model.cache_clear()  # built-in models are loaded once per process
    try:
        with pytest.raises(ModelFileError, match="pass a model file"):
            segment(np.zeros((32, 32)))
    finally:
        builtin_model.cache_clear()


def test_the_model_cards_postprocessing_settings_are_used():
    from napari_unet.inference.pipeline import postprocessing_settings

    model = UNet(1, 3, depth=2, base_filters=4)
    assert postprocessing_settings(model) == {"min_size": 10}
    model.card = {
        "postprocessing": {"seed_threshold": 0.8, "foreground_threshold": 0.6, "min_size": 20}
    }
    assert postprocessing_settings(model) == {
        "seed_threshold": 0.8,
        "foreground_threshold": 0.6,
        "min_size": 20,
    }
    assert postprocessing_settings(model, min_size=5)["min_size"] == 5


@pytest.mark.parametrize("dtype", [np.uint32, np.int32, np.uint64, np.uint16])
def test_resampling_keeps_whole_numbers_within_their_type(dtype):
    """Enlarged or shrunk, the largest values of a wide integer type do not wrap to 0."""
    from napari_unet.inference.sizing.rescale import resample

    top = np.iinfo(dtype).max
    image = np.zeros((16, 16), dtype)
    image[4:12, 4:12] = top
    for zoom in ((3.0, 3.0), (0.5, 0.5)):
        out = resample(image, zoom, order=1)
        assert out.dtype == dtype and out.min() == 0
        centre = tuple(n // 2 for n in out.shape)
        if np.dtype(dtype).itemsize < 8:
            assert out.max() == top and out[centre] == top  # no wrap-around
        else:  # 2**64 - 1 is not a float64: the nearest one below it
            assert out.max() == out[centre] > top - 4096


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.float64])
def test_linear_resizing_equals_scipys_zoom_on_every_axis(dtype):
    """The separable linear resize (one axis at a time, as the ZX / ZY planes of a z-stack
    take it) gives scipy.ndimage.zoom's values (order 1, edges held, grid mode)."""
    from scipy import ndimage as ndi

    from napari_unet.inference.sizing.rescale import resize

    rng = np.random.default_rng(4)
    image = (rng.random((3, 2, 37, 50)) * 1000).astype(dtype)
    for shape in [(3, 2, 75, 50), (3, 2, 19, 50), (3, 2, 90, 21), (5, 1, 37, 123), (1, 2, 1, 1)]:
        zoom = [t / n for t, n in zip(shape, image.shape)]
        expected = ndi.zoom(image.astype(np.float64), zoom, order=1, mode="nearest", grid_mode=True)
        out = resize(image, shape, 1)
        assert out.shape == shape and out.dtype == dtype
        if np.dtype(dtype).kind == "f":
            np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)
        else:  # rounded to whole numbers: at most one apart where scipy's rounding differs
            assert np.abs(out.astype(float) - np.rint(expected)).max() <= 1
