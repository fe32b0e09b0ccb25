"""Probabilities to labels: argmax, seeded watershed, and the chunked (zarr) form."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi
from skimage.draw import disk

from napari_unet.common.errors import ShapeError
from napari_unet.inference.labels import postprocess
from napari_unet.inference.labels.postprocess import (
    ChunkProgress,
    _distance_to_background,
    instance_labels,
    instance_labels_chunked,
    semantic_labels,
    semantic_labels_chunked,
)
from napari_unet.training.data.targets import instance_to_classes


def _nuclei(shape=(200, 300), seed=0) -> np.ndarray:
    """Instance labels of a grid of discs, some of them touching."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    n = 1
    for cy in range(15, shape[0], 28):
        for cx in range(15, shape[1], 28):
            centre = (cy + rng.integers(-3, 4), cx + rng.integers(-3, 4))
            rr, cc = disk(centre, rng.integers(6, 15), shape=shape)
            labels[rr, cc] = n  # larger radii overlap the neighbour: touching objects
            n += 1
    return labels


def _probabilities(labels: np.ndarray) -> np.ndarray:
    """Soft (background, interior, boundary) probabilities that encode ``labels``."""
    classes = instance_to_classes(labels)
    onehot = np.stack([(classes == k) for k in range(3)]).astype(np.float32)
    return 0.85 * onehot + 0.05


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True if ``a`` and ``b`` are the same labelling up to renumbering."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (
        np.array_equal(a == 0, b == 0)
        and len(pairs[0]) == len(np.unique(a))
        and len(pairs[0]) == len(np.unique(b))
    )


def _disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels where ``b`` is not the label ``b`` gives most of ``a``'s object."""
    pairs, counts = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1, return_counts=True)
    best = {}
    for (la, lb), n in zip(pairs.T, counts):
        if n > best.get(la, (0, 0))[1]:
            best[la] = (lb, n)
    agree = sum(n for _, n in best.values())
    return 1.0 - agree / a.size


def test_semantic_labels_are_the_argmax():
    probs = np.array([[[0.7, 0.1]], [[0.2, 0.3]], [[0.1, 0.6]]], np.float32)
    np.testing.assert_array_equal(semantic_labels(probs), [[0, 2]])
    assert semantic_labels(probs).dtype == np.int32


def test_instance_labels_recover_touching_objects():
    truth = _nuclei()
    kept = np.unique(truth[instance_to_classes(truth) == 1])
    truth = np.where(np.isin(truth, kept), truth, 0)  # objects with an interior only
    labels = instance_labels(_probabilities(truth), min_size=1)
    assert labels.max() == len(np.unique(truth)) - 1
    assert _same_partition(labels, truth)


def test_instance_labels_drop_small_objects_and_number_consecutively():
    truth = np.zeros((40, 40), np.int32)
    truth[2:12, 2:12] = 1  # 100 px
    truth[20:23, 20:23] = 2  # 9 px
    truth[30:38, 25:35] = 3  # 80 px
    labels = instance_labels(_probabilities(truth), min_size=10)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert (labels[20:23, 20:23] == 0).all()
    assert (labels[30:38, 25:35] == 2).all()


def test_instance_labels_of_empty_probabilities_are_empty():
    probs = np.zeros((3, 16, 16), np.float32)
    probs[0] = 1.0
    labels = instance_labels(probs)
    assert labels.shape == (16, 16) and labels.max() == 0


def test_instance_labels_need_three_classes():
    with pytest.raises(ShapeError, match="3-class model"):
        instance_labels(np.zeros((2, 8, 8), np.float32))


def test_chunked_instance_labels_equal_in_memory_and_keep_one_label_across_chunks(tmp_path):
    truth = _nuclei()
    truth[100:110, 5:295] = truth.max() + 1  # a long bar across four chunk borders
    probs = _probabilities(truth)
    expected = instance_labels(probs, min_size=5)
    probs_z = zarr.open_array(
        tmp_path / "p.zarr", mode="w", shape=probs.shape, chunks=(3, 50, 70), dtype="f4"
    )
    probs_z[:] = probs
    out = zarr.open_array(
        tmp_path / "l.zarr", mode="w", shape=truth.shape, chunks=(64, 64), dtype="i4"
    )
    events = list(_drain(instance_labels_chunked(probs_z, out, min_size=5)))
    got = out[:]
    # same objects; only pixels equidistant from two seeds may be assigned differently
    # (the watershed breaks such ties in scan order, which differs per chunk window)
    assert got.max() == expected.max()
    np.testing.assert_array_equal(got > 0, expected > 0)
    assert _disagreement(expected, got) < 1e-3
    bar = (truth == truth.max()) & (instance_to_classes(truth) == 1)
    assert len(np.unique(got[bar])) == 1  # the bar crosses four chunk borders: one object
    assert events[-1] == ChunkProgress(3 * 4 * 5, 3 * 4 * 5)  # 3 passes over 4x5 chunks
    assert [e.done for e in events] == sorted(e.done for e in events)


def test_chunked_semantic_labels(tmp_path):
    rng = np.random.default_rng(1)
    probs = rng.random((4, 30, 40)).astype(np.float32)
    out = zarr.open_array(
        tmp_path / "s.zarr", mode="w", shape=(30, 40), chunks=(16, 16), dtype="i4"
    )
    assert len(list(semantic_labels_chunked(probs, out))) == 2 * 3
    np.testing.assert_array_equal(out[:], semantic_labels(probs))


def _drain(gen):
    """Yield every event of ``gen`` (a generator with a return value)."""
    yield from gen


def _two_merged_discs(shape=(60, 90), r=14, gap=24):
    """Probabilities of two discs whose interiors merge through a neck (no boundary between)."""
    labels = np.zeros(shape, np.int32)
    c = shape[0] // 2
    for i, cx in enumerate((shape[1] // 2 - gap // 2, shape[1] // 2 + gap // 2), start=1):
        rr, cc = disk((c, cx), r, shape=shape)
        labels[rr, cc] = i
    union = (labels > 0).astype(np.int32)
    return labels, _probabilities(union)  # the model saw one blob


def test_split_separates_interiors_that_merge_through_a_neck():
    truth, probs = _two_merged_discs()
    assert instance_labels(probs).max() == 1  # one seed: merged
    split = instance_labels(probs, split=1.0)
    assert split.max() == 2
    # each object is mostly one of the true discs
    for i in (1, 2):
        _, counts = np.unique(split[truth == i], return_counts=True)
        assert counts.max() / counts.sum() > 0.9


def test_split_keeps_single_round_and_tiny_objects_whole():
    labels = np.zeros((80, 80), np.int32)
    rr, cc = disk((30, 30), 20)
    labels[rr, cc] = 1
    labels[70:72, 70:72] = 2  # 4 pixels: no distance-transform peak of height 1
    probs = _probabilities(labels)
    got = instance_labels(probs, split=1.0, min_size=1)
    assert got.max() == 2
    assert _same_partition(got, instance_labels(probs, min_size=1))


def test_chunked_split_equals_in_memory(tmp_path):
    truth = _nuclei(seed=2)
    probs = _probabilities((truth > 0).astype(np.int32))  # merged blobs everywhere
    expected = instance_labels(probs, min_size=5, split=1.0)
    assert expected.max() > instance_labels(probs, min_size=5).max()  # the split did work
    probs_z = zarr.open_array(
        tmp_path / "p.zarr", mode="w", shape=probs.shape, chunks=(3, 50, 70), dtype="f4"
    )
    probs_z[:] = probs
    out = zarr.open_array(
        tmp_path / "l.zarr", mode="w", shape=truth.shape, chunks=(64, 64), dtype="i4"
    )
    _ = list(_drain(instance_labels_chunked(probs_z, out, min_size=5, split=1.0)))
    got = out[:]
    assert got.max() == expected.max()
    np.testing.assert_array_equal(got > 0, expected > 0)
    assert _disagreement(expected, got) < 1e-3


@pytest.mark.parametrize("slab", [1 << 20, 7, 600])
def test_distance_to_background_equals_scipy(monkeypatch, slab):
    # the seeds' distance transform, summed slab by slab (as integers for unit pixels):
    # scipy's float64 values, as float32, whatever the slab
    monkeypatch.setattr(postprocess, "DISTANCE_SLAB", slab)
    rng = np.random.default_rng(4)
    masks = [
        _nuclei() > 0,
        rng.random((40, 30, 20)) > 0.3,
        rng.random(50) > 0.5,
        np.ones((5, 7), bool),
        np.zeros((4, 4), bool),
    ]
    for mask in masks:
        want = ndi.distance_transform_edt(mask).astype(np.float32)
        got = _distance_to_background(mask, None)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    for sampling in [(3.0, 1.0, 1.0), (0.7, 1.3, 2.1)]:
        anisotropic = _distance_to_background(masks[1], sampling)
        want = ndi.distance_transform_edt(masks[1], sampling=sampling).astype(np.float32)
        np.testing.assert_array_equal(anisotropic, want)


def test_chunks_worked_on_in_threads_come_back_in_order_and_bounded():
    """Two chunks at a time: results in the items' order, never more than two started ahead
    of the consumer, and closing the run leaves the rest unstarted."""
    import threading
    import time

    from napari_unet.inference.labels.postprocess import in_order

    started, lock, running, most = [], threading.Lock(), [0], [0]

    def work(i):
        with lock:
            started.append(i)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01 * (5 - i % 5))  # later items finish first
        with lock:
            running[0] -= 1
        return i * i

    assert list(in_order(work, list(range(12)), threads=2)) == [i * i for i in range(12)]
    assert most[0] <= 2 and sorted(started) == list(range(12))
    started.clear()
    gen = in_order(work, list(range(12)), threads=2)
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    assert len(started) <= 4  # the two consumed and at most two in work: the rest never ran
    assert list(in_order(work, [3], threads=2)) == [9]
