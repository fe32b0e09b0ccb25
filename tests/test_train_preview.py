"""The Train dock's live preview segments at the scale training works at: each image resampled so
its objects have the working object size (training/data/working_size.py), then brought back."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_unet._napari.train._train_inputs import PairSource
from napari_unet._napari.train._train_job import (
    PreviewReady,
    PreviewSpec,
    predict_slice,
    training_job,
    working_diameter,
)
from napari_unet.common.progress import run_to_end
from napari_unet.training.augment import AugmentConfig
from napari_unet.training.config import TrainConfig


def _discs(shape=(96, 96), radius=12, step=32, seed=0):
    """Labels of discs ~``2 * radius`` px across, and an image of them."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    n = 0
    for cy in range(step // 2, shape[0], step):
        for cx in range(step // 2, shape[1], step):
            n += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = n
    noise = np.random.default_rng(seed).normal(0, 0.05, shape)
    return (labels > 0).astype(np.float32) + noise.astype(np.float32), labels


def _working_side(labels, working: float) -> int:
    """The image side once its objects' median diameter is ``working`` px."""
    from napari_unet.training.data.pairs import object_diameters

    return round(labels.shape[0] * working / float(np.median(object_diameters(labels))))


@pytest.fixture
def seen(monkeypatch):
    """The input shapes the preview's prediction gets."""
    from napari_unet.inference.tiling import predict

    shapes: list[tuple[int, ...]] = []
    original = predict.predict_tiled

    def recording(model, x, **kwargs):
        shapes.append(tuple(x.shape))
        return original(model, x, **kwargs)

    monkeypatch.setattr(predict, "predict_tiled", recording)
    return shapes


def test_preview_resamples_the_slice_as_training_does(tiny_model, seen):
    image, labels = _discs()  # objects ~24 px across
    source = PairSource("discs", "gt", image, labels)
    config = TrainConfig(depth=2, base_filters=4)
    out = predict_slice(tiny_model, source, (), config, working=12.0)
    half = _working_side(labels, 12.0)
    assert half in (48, 49) and seen[-1] == (1, half, half)  # objects at the 12 px size
    assert out.shape == labels.shape  # back on the slice's grid
    predict_slice(tiny_model, source, (), config, working=None)
    assert seen[-1] == (1, 96, 96)  # without a working size: as it is
    predict_slice(tiny_model, source, (), config, working=25.0)
    assert seen[-1] == (1, 96, 96)  # within the tolerance of the working size: as it is


def test_training_job_previews_at_the_working_size_it_trains_at(seen):
    image, labels = _discs()
    source = PairSource("discs", "gt", image, labels)
    config = TrainConfig(
        depth=2, base_filters=4, patch_size=32, batch_size=2, epochs=1, steps_per_epoch=2,
        augment=AugmentConfig.none(), device="cpu", object_diameter=12.0,
        tune_postprocessing=False,
    )  # fmt: skip
    preview = PreviewSpec(source, every=1, index=lambda: ())
    gen = training_job([source], config, threading.Event(), preview=preview)
    events = []
    result = run_to_end(gen, events.append)
    previews = [e for e in events if isinstance(e, PreviewReady)]
    assert previews and previews[-1].labels.shape == labels.shape
    side = _working_side(labels, 12.0)
    assert (1, side, side) in seen  # the preview saw the image at the training scale
    assert (1, 96, 96) not in seen  # and never at the image's own
    expected = predict_slice(result.model, source, (), config, working=12.0)
    np.testing.assert_array_equal(previews[-1].labels, expected)
    assert result.model.card["object_diameter"] == 12.0  # the size the preview used


def test_working_diameter_is_the_one_training_records(tiny_model):
    from napari_unet.training.arrays import prepare_data

    big, big_labels = _discs(radius=12)
    small, small_labels = _discs(radius=6, step=16, seed=1)
    config = TrainConfig(depth=2, base_filters=4, val_fraction=0.0)
    pairs = prepare_data([big, small], [big_labels, small_labels], config)
    working = working_diameter(pairs, config, tiny_model)
    diameters = np.concatenate([p.diameters for p in pairs])
    assert working == pytest.approx(float(np.median(diameters)))  # the data's median
    tiny_model.card = {**tiny_model.card, "object_diameter": 20.0}
    assert working_diameter(pairs, config, tiny_model) == 20.0  # a fine-tune: the model's
