"""Z stacks with a 2D model: z_mode "3d", "stitch" and "slices" (inference/volumes/zstack.py).

Most tests use a U-Net whose forward pass is a threshold (bright = interior), so the right
answer is known exactly: the 3D connected components of the bright voxels. One test runs the
built-in nuclei model on a synthetic stack of textured ellipsoids (tests/synthetic3d.py).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage as ndi

from napari_unet import UNet, segment
from napari_unet.common.errors import UserInputError
from napari_unet.inference.pipeline import segment_iter
from napari_unet.inference.volumes import zstack
from napari_unet.metrics import average_precision
from synthetic3d import ellipsoid_stack


class ThresholdNet(UNet):
    """Interior where the normalised input is above 0.5, else background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :1]
        return torch.cat([8 * (0.5 - v), 8 * (v - 0.5), torch.full_like(v, -30.0)], dim=1)


@pytest.fixture
def net():
    model = ThresholdNet(1, 3, depth=2, base_filters=4).eval()
    model.card = {"task": "instance", "normalization": {"method": "minmax"}}
    return model


def _balls(shape=(10, 40, 48)) -> np.ndarray:
    """A uint8 stack of separated bright objects, 2 to 8 slices deep.

    Ellipsoids of z semi-axis 1.5 to 4.5 slices: their slices overlap the next by an IoU
    above 0.2, so stitching links them as the 3D mode does.
    """
    z, y, x = np.indices(shape, dtype=float)
    image = np.full(shape, 10, np.uint8)
    for cz, cy, cx, r, rz in [
        (3.5, 10, 10, 5, 3.5),
        (5.5, 12, 30, 6, 4.5),
        (1.5, 30, 12, 4, 1.5),
        (7.5, 30, 36, 5, 2.5),
    ]:
        image[((z - cz) / (rz + 0.5)) ** 2 + ((y - cy) / r) ** 2 + ((x - cx) / r) ** 2 <= 1] = 200
    return image


def _same_partition(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return np.array_equal(a == 0, b == 0) and pairs.shape[1] == len(np.unique(a)) == len(
        np.unique(b)
    )


@pytest.mark.parametrize("mode", ["3d", "stitch", None])
def test_3d_and_stitch_give_one_id_per_object(net, mode):
    image = _balls()
    labels = segment(image, net, axes="ZYX", z_mode=mode, anisotropy=2.0, min_size=1)
    assert labels.shape == image.shape and labels.dtype == np.int32
    assert _same_partition(labels, ndi.label(image > 100)[0])


def test_slices_ids_are_unique_over_the_stack(net):
    image = _balls()
    labels = segment(image, net, axes="ZYX", z_mode="slices", min_size=1)
    seen: set[int] = set()
    for z in range(image.shape[0]):
        assert _same_partition(labels[z], ndi.label(image[z] > 100)[0])
        ids = set(np.unique(labels[z])) - {0}
        assert not ids & seen
        seen |= ids
    assert len(seen) == sum(ndi.label(image[z] > 100)[1] for z in range(image.shape[0]))


def test_time_points_keep_their_own_ids_and_get_3d_objects(net):
    image = _balls()
    movie = np.stack([image, image[:, ::-1]])  # TZYX
    n = ndi.label(image > 100)[1]
    for mode in ("3d", "stitch", "slices"):
        labels = segment(movie, net, axes="TZYX", z_mode=mode, min_size=1)
        assert labels.shape == movie.shape
        assert labels[0].min() == labels[1].min() == 0
        if mode != "slices":  # every time point numbered 1..n on its own
            assert labels[0].max() == labels[1].max() == n
            assert _same_partition(labels[1], ndi.label(movie[1] > 100)[0])


def test_other_axis_orders_come_back_in_their_order(net):
    image = _balls()
    zxy = np.transpose(image, (0, 2, 1))
    labels = segment(zxy, net, axes="ZXY", z_mode="3d", min_size=1)
    assert labels.shape == zxy.shape
    assert _same_partition(np.transpose(labels, (0, 2, 1)), ndi.label(image > 100)[0])


def test_3d_reports_every_batch_of_planes_and_close_cancels(net):
    image = _balls()
    events = []
    segment(
        image, net, axes="ZYX", z_mode="3d", batch_size=4, anisotropy=1.5, progress=events.append
    )
    done = [e.done for e in events if e.stage == "predict"]
    assert {e.total for e in events if e.stage == "predict"} == {sum(image.shape)}
    assert done == sorted(done) and done[-1] == sum(image.shape)
    assert len(done) >= sum(-(-n // 4) for n in image.shape)  # one event per batch at least
    gen = segment_iter(image, net, axes="ZYX", z_mode="3d", diameter=None)
    next(gen)
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


@pytest.mark.parametrize("mode", ["3d", "stitch", "slices"])
def test_dask_and_zarr_input_match_numpy(net, tmp_path, mode):
    image = _balls()
    expected = segment(image, net, axes="ZYX", z_mode=mode, min_size=1)
    out = tmp_path / "labels.zarr"
    lazy = da.from_array(image, chunks=(1, 20, 48))
    labels = segment(lazy, net, axes="ZYX", z_mode=mode, min_size=1, out=out)
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), expected)
    np.testing.assert_array_equal(zarr.open_array(out, mode="r")[:], expected)
    # without a store the relabelling stays lazy
    lazy_labels = segment(lazy, net, axes="ZYX", z_mode=mode, min_size=1)
    np.testing.assert_array_equal(np.asarray(lazy_labels), expected)


def test_semantic_output_averages_orientations_in_3d(net):
    image = _balls()
    semantic = segment(image, net, axes="ZYX", output="semantic", z_mode="3d")
    np.testing.assert_array_equal(semantic, (image > 100).astype(np.int32))
    probs = segment(image, net, axes="ZYX", output="probabilities", z_mode="3d")
    assert probs.shape == (3, *image.shape)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_link_slices_follows_the_iou_threshold():
    previous = np.zeros((10, 10), np.int32)
    previous[0:4, 0:4] = 5
    current = np.zeros((10, 10), np.int32)
    current[1:5, 1:5] = 1  # IoU 9/23 with object 5
    current[7:9, 7:9] = 2  # overlaps nothing
    assert list(zstack.link_slices(previous, current, 6, 0.3)) == [0, 5, 6]
    assert list(zstack.link_slices(previous, current, 6, 0.5)) == [0, 6, 7]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"z_mode": "volume"}, "z_mode must be one of"),
        ({"anisotropy": 0}, "anisotropy must be a number in"),
        ({"anisotropy": 1e9}, "anisotropy must be a number in"),
        ({"z_mode": "stitch", "stitch_threshold": 1.5}, "stitch_threshold must be"),
    ],
)
def test_bad_z_arguments_name_the_argument(net, kwargs, match):
    with pytest.raises(UserInputError, match=match):
        segment(_balls(), net, axes="ZYX", **kwargs)


def test_z_mode_does_not_apply_to_3d_models_or_2d_images(net):
    assert zstack.resolve_z_mode(None, "ZYX", net, "instance") == "3d"
    assert zstack.resolve_z_mode(None, "ZYX", net, "semantic") == "slices"
    assert zstack.resolve_z_mode(None, "ZYX", net, "instance", lazy=True) == "3d"  # blockwise
    assert zstack.resolve_z_mode("stitch", "TYX", net, "instance") is None
    net3 = UNet(1, 3, ndim=3, depth=1, base_filters=2)
    assert zstack.resolve_z_mode("3d", "ZYX", net3, "instance") is None


@pytest.mark.parametrize(("mode", "anisotropy"), [("3d", 3.0), ("stitch", 2.0)])
def test_builtin_model_finds_each_ellipsoid_once(mode, anisotropy):
    image, truth = ellipsoid_stack((12, 72, 72), anisotropy, seed=0)
    labels = segment(image, axes="ZYX", z_mode=mode, anisotropy=anisotropy)
    ap = average_precision(truth, labels, [0.5]).mean
    assert ap >= 0.9, f"{mode}: AP@0.5 {ap:.3f} on {truth.max()} ellipsoids"


def test_large_volumes_are_post_processed_in_chunks_with_the_same_objects(net, monkeypatch):
    image = _balls((10, 40, 48))
    whole = segment(image, net, axes="ZYX", z_mode="3d", min_size=1)
    monkeypatch.setattr(zstack, "CHUNKED_VOXELS", 100)
    monkeypatch.setattr(zstack, "CHUNK", 16)  # balls cross the chunk borders
    events = []
    chunked = segment(image, net, axes="ZYX", z_mode="3d", min_size=1, progress=events.append)
    assert _same_partition(chunked, whole)
    assert sum(e.stage == "postprocess" for e in events) > 9  # per chunk step


def test_zarr_stack_output_has_no_final_name_until_linked(tiny_model, tmp_path):
    """The slices are linked under the temporary name: a kill at any moment leaves no store
    under the final name (issue 29: a SIGKILL left an unlinked store that read as a result)."""
    rng = np.random.default_rng(0)
    stack = da.from_array((rng.random((4, 48, 48)) * 200).astype(np.uint8), chunks=(1, 48, 48))
    final = tmp_path / "out_labels.zarr"
    seen_linking = []

    def watch(event):
        if event.stage == "linking slices":
            seen_linking.append(final.exists())

    labels = segment(
        stack, tiny_model, axes="ZYX", z_mode="stitch", out=final, diameter=None, progress=watch
    )
    assert seen_linking and not any(seen_linking)
    assert final.exists() and labels.shape == (4, 48, 48)
