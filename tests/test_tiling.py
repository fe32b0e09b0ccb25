"""Tiled inference: receptive field, seamless tiling, identity oracle, cancel, dask/zarr, errors."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from napari_unet.common.errors import ShapeError, UserInputError
from napari_unet.inference.tiling.predict import (
    TileProgress,
    predict_tiled,
    predict_tiled_dask,
    predict_tiled_iter,
    receptive_field,
)
from napari_unet.inference.tiling.tile_plan import plan_tiles
from napari_unet.model.inference import inference_model
from napari_unet.model.unet import UNet, center_crop

torch.set_num_threads(1)


def _random_bn(net: UNet, seed: int = 0) -> UNet:
    """Give the batch norms non-trivial statistics, then switch to eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return net.eval()


def _small_net(ndim: int = 2, classes: int = 3, depth: int = 2, padding: str = "same") -> UNet:
    torch.manual_seed(0)
    return _random_bn(UNet(1, classes, ndim=ndim, depth=depth, base_filters=4, padding=padding))


def _whole(net: UNet, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net.eval()(torch.from_numpy(image)[None]), 1)[0].numpy()


class IdentityUNet(UNet):
    """Returns log(x) (centre-cropped for "valid"), so softmax gives back x when sum_c x = 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(tuple(x.shape[2:]))
        return center_crop(torch.log(x), self.output_shape(tuple(x.shape[2:])))


class CountingUNet(UNet):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().forward(x)


def _two_class_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).uniform(0.05, 0.95, shape).astype(np.float32)
    return np.stack([a, 1 - a])


# -- receptive field --------------------------------------------------------------------------
def test_receptive_field_values():
    assert receptive_field(UNet(depth=4)) == (107, 107)
    assert receptive_field(UNet(depth=2, ndim=3)) == (23, 23, 23)
    assert receptive_field(UNet(depth=0)) == (2, 2)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field_bounds_the_influence_of_a_pixel(depth):
    torch.manual_seed(depth)
    net = UNet(1, 2, depth=depth, base_filters=4, batch_norm=False).eval()
    for p in net.parameters():  # positive weights: no dead ReLU hides an influence
        p.data.abs_()
    (halo,) = set(receptive_field(net))
    x = torch.rand(1, 1, 128, 128)
    reach = 0
    with torch.no_grad():
        base = net(x)
        for phase in range(2**depth):
            x2 = x.clone()
            x2[0, 0, 64 + phase, 64 + phase] += 10
            changed = np.nonzero((net(x2) - base).abs().sum((0, 1)).numpy() > 0)
            offsets = np.concatenate(changed) - 64 - phase
            reach = max(reach, int(np.abs(offsets).max()))
    assert reach <= halo
    assert reach >= halo - 2**depth  # and the bound is tight


# -- the plan ---------------------------------------------------------------------------------
@pytest.mark.parametrize("blend", ["gaussian", "linear", "crop"])
@pytest.mark.parametrize(
    ("depth", "padding", "size", "tile", "overlap"),
    [
        (2, "same", 100, 32, 8),
        (3, "same", 1000, None, None),
        (2, "same", 7, None, 3),
        (2, "valid", 150, 60, 6),
        (4, "same", 2048, 512, 100),
        (1, "same", 33, 8, 2),
    ],
)
def test_plan_is_aligned_covers_the_image_and_weights_sum_to_one(
    depth, padding, size, tile, overlap, blend
):
    net = UNet(depth=depth, padding=padding)
    plan = plan_tiles(net, (size, size), tile_shape=tile, overlap=overlap, blend=blend)
    axis = plan.axes[0]
    assert all(start % 2**depth == 0 for start in axis.starts)
    assert axis.starts[0] == 0 and axis.starts[-1] + axis.out >= size
    assert all(o >= (overlap or 0) for o in axis.overlaps)
    assert net.output_size(axis.tile) == axis.out
    total = np.zeros(axis.starts[-1] + axis.out)
    for start, w in zip(axis.starts, axis.weights(blend)):
        total[start : start + axis.out] += w
    np.testing.assert_allclose(total[:size], 1, atol=1e-6)
    index = (axis.n_tiles // 2,) * 2
    assert plan.weight(index).shape == plan.out_shape


def test_default_plan_sizes_tiles_to_the_image():
    net = UNet(depth=4)
    plan = plan_tiles(net, (2048, 300))
    assert plan.grid == (2, 1)
    assert plan.tile_shape == (1040, 304)  # 2 tiles of 1040 px rather than 3 of 1024
    assert plan.axes[0].overlaps == (32,)
    assert plan_tiles(net, (20, 30)).tile_shape == (32, 32)  # small image: one padded tile


def test_pixels_that_see_the_tile_padding_get_no_weight():
    net = UNet(depth=2)
    (halo, _) = receptive_field(net)
    axis = plan_tiles(net, (200, 200), tile_shape=64, overlap=2 * halo).axes[0]
    weights = axis.weights("gaussian")
    assert axis.trim == halo
    assert np.all(weights[1:, :halo] == 0) and np.all(weights[:-1, -halo:] == 0)
    assert np.all(weights[0, :halo] > 0)  # the image border has no neighbour to defer to


# -- seamless: tiled == whole image -----------------------------------------------------------
@pytest.mark.parametrize("blend", ["gaussian", "linear", "crop"])
def test_tiled_equals_whole_image_2d(blend):
    net = _small_net()
    image = np.random.default_rng(1).normal(size=(1, 96, 128)).astype(np.float32)
    (halo, _) = receptive_field(net)
    plan = plan_tiles(net, image.shape[1:], tile_shape=64, overlap=2 * halo, blend=blend)
    assert plan.grid == (3, 5)
    probs = predict_tiled(net, image, tile_shape=64, overlap=2 * halo, blend=blend, device="cpu")
    assert probs.dtype == np.float32 and probs.shape == (3, 96, 128)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    assert np.abs(probs - _whole(net, image)).max() < 1e-3


def test_tiled_equals_whole_image_3d():
    net = _small_net(ndim=3, classes=2, depth=1)
    image = np.random.default_rng(2).normal(size=(1, 24, 32, 36)).astype(np.float32)
    (halo, *_) = receptive_field(net)
    probs = predict_tiled(net, image, tile_shape=(20, 20, 20), overlap=2 * halo, batch_size=3)
    assert probs.shape == (2, 24, 32, 36)
    assert np.abs(probs - _whole(net, image)).max() < 1e-3


def test_default_plan_of_a_small_image_is_one_exact_tile():
    net = _small_net()
    image = np.random.default_rng(3).normal(size=(1, 64, 80)).astype(np.float32)
    assert plan_tiles(net, image.shape[1:]).n_tiles == 1
    assert np.abs(predict_tiled(net, image) - _whole(net, image)).max() < 1e-5


def test_valid_padding_tiles_match_whole_image():
    net = _small_net(padding="valid", classes=2)
    image = np.random.default_rng(4).normal(size=(1, 100, 100)).astype(np.float32)
    probs = predict_tiled(net, image, tile_shape=44, overlap=0)
    m = (100 - net.output_size(100)) // 2
    whole = _whole(net, image)  # covers image pixels m .. 100 - m
    assert probs.shape == (2, 100, 100)
    assert np.abs(probs[:, m:-m, m:-m] - whole).max() < 1e-5


# -- identity oracle --------------------------------------------------------------------------
IDENTITY_CASES = [
    # ndim, padding, depth, spatial shape, tile, overlap, blend
    (2, "same", 2, (37, 50), 16, 4, "gaussian"),
    (2, "same", 2, (37, 50), 16, 0, "crop"),
    (2, "same", 3, (5, 7), None, None, "gaussian"),  # smaller than one tile
    (2, "same", 1, (1, 1), None, None, "linear"),
    (2, "same", 2, (64, 33), (32, 8), (8, 4), "linear"),
    (2, "same", 2, (100, 90), None, 12, "crop"),
    (2, "valid", 2, (37, 50), 44, 0, "gaussian"),
    (2, "valid", 1, (23, 61), 30, 5, "linear"),
    (3, "same", 2, (9, 20, 13), 8, 4, "gaussian"),
    (3, "valid", 1, (7, 15, 11), 22, 2, "crop"),
]


@pytest.mark.parametrize(
    ("ndim", "padding", "depth", "shape", "tile", "overlap", "blend"), IDENTITY_CASES
)
def test_identity_predictor_reconstructs_input(ndim, padding, depth, shape, tile, overlap, blend):
    net = IdentityUNet(2, 2, ndim=ndim, depth=depth, base_filters=1, padding=padding)
    image = _two_class_image(shape)
    probs = predict_tiled(net, image, tile_shape=tile, overlap=overlap, blend=blend, batch_size=3)
    np.testing.assert_allclose(probs, image, atol=2e-6)


# -- generator, progress, cancel --------------------------------------------------------------
def test_progress_and_result():
    net = _small_net()
    image = np.zeros((1, 64, 64), np.float32)
    gen = predict_tiled_iter(net, image, tile_shape=32, overlap=16, batch_size=2)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    total = plan_tiles(net, (64, 64), tile_shape=32, overlap=16).n_tiles
    assert events[-1] == TileProgress(done=total, total=total)
    assert [e.done for e in events] == sorted({min(total, 2 * i) for i in range(1, total)})
    assert result.shape == (3, 64, 64)


def test_closing_the_generator_stops_within_one_batch():
    torch.manual_seed(0)
    net = CountingUNet(1, 2, depth=2, base_filters=2)
    CountingUNet.calls = 0
    gen = predict_tiled_iter(net, np.zeros((1, 128, 128), np.float32), tile_shape=32, batch_size=2)
    assert next(gen).done == 2
    gen.close()
    assert CountingUNet.calls == 1


def test_caller_model_is_left_unchanged():
    net = _small_net()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    predict_tiled(net, np.zeros((1, 32, 32), np.float32))
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_folded_batch_norm_matches_eval():
    net = _small_net(depth=3)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ref = net.eval()(x)
        fast = inference_model(net, torch.device("cpu"))(x)
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in inference_model(net, "cpu").modules()
    )
    assert (fast - ref).abs().max() < 1e-4


# -- dask and zarr ----------------------------------------------------------------------------
def test_zarr_in_zarr_out_matches_numpy(tmp_path):
    net = _small_net()
    image = np.random.default_rng(5).normal(size=(1, 70, 90)).astype(np.float32)
    z_in = zarr.create_array(
        tmp_path / "in.zarr", shape=image.shape, chunks=(1, 32, 32), dtype="f4"
    )
    z_in[...] = image
    z_out = zarr.create_array(
        tmp_path / "out.zarr", shape=(3, 70, 90), chunks=(3, 32, 32), dtype="f4", fill_value=0
    )
    ref = predict_tiled(net, image, tile_shape=32, overlap=8)
    result = predict_tiled(net, z_in, tile_shape=32, overlap=8, out=z_out)
    assert result is z_out
    np.testing.assert_allclose(zarr.open_array(tmp_path / "out.zarr")[...], ref, atol=1e-6)


def test_dask_streaming_and_lazy_match_numpy():
    net = _small_net()
    image = np.random.default_rng(6).normal(size=(1, 70, 90)).astype(np.float32)
    lazy_image = da.from_array(image, chunks=(1, 40, 40))
    ref = predict_tiled(net, image, tile_shape=32, overlap=8)
    np.testing.assert_allclose(
        predict_tiled(net, lazy_image, tile_shape=32, overlap=8), ref, atol=1e-6
    )
    lazy = predict_tiled_dask(net, lazy_image, tile_shape=32, overlap=8)
    assert isinstance(lazy, da.Array) and lazy.shape == (3, 70, 90) and lazy.dtype == np.float32
    np.testing.assert_allclose(lazy.compute(scheduler="synchronous"), ref, atol=1e-6)
    batched = predict_tiled_dask(net, lazy_image, tile_shape=32, overlap=8, batch_size=4)
    np.testing.assert_allclose(batched.compute(scheduler="synchronous"), ref, atol=1e-6)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "kwargs", "error", "match"),
    [
        (np.zeros((32, 32), np.float32), {}, ShapeError, "channel-first"),
        (np.zeros((2, 32, 32), np.float32), {}, ShapeError, "1 channel"),
        (np.zeros((1, 0, 32), np.float32), {}, ShapeError, "empty"),
        (np.zeros((1, 32, 32), complex), {}, UserInputError, "real numbers"),
        ("not an array", {}, UserInputError, "numpy, dask or zarr"),
        (np.zeros((1, 32, 32), np.float32), {"tile_shape": 30}, ShapeError, "valid size"),
        (
            np.zeros((1, 32, 32), np.float32),
            {"tile_shape": (16, 16, 16)},
            UserInputError,
            "tile_shape",
        ),
        (
            np.zeros((1, 64, 64), np.float32),
            {"tile_shape": 16, "overlap": 16},
            UserInputError,
            "overlap",
        ),
        (np.zeros((1, 32, 32), np.float32), {"overlap": -1}, UserInputError, "overlap"),
        (np.zeros((1, 32, 32), np.float32), {"blend": "max"}, UserInputError, "blend"),
        (np.zeros((1, 32, 32), np.float32), {"batch_size": 0}, UserInputError, "batch_size"),
        (np.zeros((1, 32, 32), np.float32), {"device": "tpu"}, UserInputError, "device"),
        (
            np.zeros((1, 32, 32), np.float32),
            {"out": np.zeros((3, 32, 31), np.float32)},
            ShapeError,
            "out",
        ),
        (np.full((1, 32, 32), np.nan, np.float32), {}, UserInputError, "NaN"),
    ],
)
def test_bad_input_raises_clear_error(image, kwargs, error, match):
    with pytest.raises(error, match=match):
        predict_tiled(_small_net(), image, **kwargs)


def test_model_must_be_a_unet():
    with pytest.raises(UserInputError, match="UNet"):
        predict_tiled(torch.nn.Identity(), np.zeros((1, 8, 8), np.float32))


def test_tta_views_and_their_inverse_give_back_the_plain_prediction():
    """An equivariant 'network' (identity on the input): every view maps back to the input."""
    from napari_unet.inference.tiling.predict import augmented, views

    assert len(views((64, 64))) == 8 and len(views((64, 96))) == 4
    assert len(views((16, 64, 64))) == 8
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(augmented(lambda b: b * 2, (64, 64))(x), x * 2, rtol=1e-6)
    y = rng.random((1, 3, 8, 64, 48)).astype(np.float32)
    np.testing.assert_allclose(augmented(lambda b: b + 1, (8, 64, 48))(y), y + 1, rtol=1e-6)


def test_segment_with_tta_runs_every_view(tiny_model):
    from napari_unet import segment

    image = (np.random.default_rng(1).random((64, 64)) * 255).astype(np.uint8)
    plain = segment(image, tiny_model, diameter=None, output="probabilities")
    tta = segment(image, tiny_model, diameter=None, output="probabilities", tta=True)
    assert tta.shape == plain.shape and not np.allclose(tta, plain)
    np.testing.assert_allclose(tta.sum(axis=0), 1.0, atol=1e-5)
