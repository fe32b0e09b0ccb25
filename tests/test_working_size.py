"""Training at the model's working object size: each image resampled to one object size."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.common.errors import UserInputError
from napari_unet.training.arrays import prepare_data, train
from napari_unet.training.config import TrainConfig
from napari_unet.training.data.working_size import resolve_working_size, to_working_size
from napari_unet.training.loop import new_model

TINY = dict(depth=2, base_filters=4, patch_size=32, batch_size=2, steps_per_epoch=2, epochs=1)


def grid_of_discs(radius: float, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image of discs of one radius on a regular grid, and their labels."""
    rng = np.random.default_rng(int(radius * 10))
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    step = int(3 * radius)
    n = 0
    for cy in range(step // 2, size - int(radius), step):
        for cx in range(step // 2, size - int(radius), step):
            n += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = n
    image = np.where(labels > 0, 200.0, 20.0) + rng.normal(0, 10, labels.shape)
    return image.astype(np.float32), labels


def pairs_of(radii, config):
    images, labels = zip(*(grid_of_discs(r) for r in radii))
    return prepare_data(list(images), list(labels), config)


def test_each_image_is_brought_to_the_working_size():
    config = TrainConfig(**TINY)
    pairs = pairs_of((4, 8), config)  # diameters ~8 and ~16 px
    working = resolve_working_size(pairs, config)
    assert working.source == "data"
    assert working.data_median == pytest.approx(
        np.median(np.concatenate([p.diameters for p in pairs]))
    )
    out, factors = to_working_size(pairs, 12.0, config, config.patch_shape())
    assert factors == pytest.approx([12 / np.median(p.diameters) for p in pairs])
    for p in out:
        assert np.median(p.diameters) == pytest.approx(12.0, rel=0.1)
        assert p.image.shape[1:] == p.target.shape == p.weight.shape == p.labels.shape
        # the targets and weights are rebuilt from the resampled labels
        assert set(np.unique(p.target)) == {0, 1, 2} and p.weight.max() > 1
    # an image already at the working size is left as it is
    same, factors = to_working_size(pairs[:1], float(np.median(pairs[0].diameters)), config)
    assert factors == [1.0] and same[0] is pairs[0]


def test_an_image_shrunk_below_the_patch_is_padded_as_unannotated():
    config = TrainConfig(**{**TINY, "patch_size": 64})
    (pair,) = pairs_of((8,), config)
    (small,), (factor,) = to_working_size([pair], 4.0, config, (64, 64))
    assert factor == pytest.approx(0.25, rel=0.05)
    assert small.spatial_shape == (64, 64)
    assert not small.valid[30:].any() and small.valid[:20, :20].all()


def test_the_working_size_is_the_fine_tuned_model_s_the_given_or_none():
    config = TrainConfig(**TINY)
    pairs = pairs_of((4, 8), config)
    model = new_model(config, 1, 3)
    model.card = {"object_diameter": 20.2}
    assert resolve_working_size(pairs, config, model).diameter == 20.2
    given = TrainConfig(**TINY, object_diameter=15)
    assert resolve_working_size(pairs, given, model).source == "given"
    assert resolve_working_size(pairs, TrainConfig(**TINY, object_diameter=None), model) is None
    semantic = TrainConfig(**TINY, task="semantic")
    assert resolve_working_size(pairs, semantic) is None


def test_the_card_records_the_working_size():
    images, labels = zip(*(grid_of_discs(r) for r in (4, 8, 8)))
    result = train(list(images), list(labels), **TINY, object_diameter=20.0, val_fraction=0.3)
    card = result.model.card
    assert card["object_diameter"] == 20.0
    size = card["provenance"]["working_size"]
    assert size["source"] == "given" and size["object_diameter"] == 20.0
    low, mid, high = size["resampling"]
    assert low <= mid <= high and high > 1.0  # the discs (8 and 16 px) were enlarged
    off = train(list(images), list(labels), **TINY, object_diameter=None, val_fraction=0.3)
    assert "working_size" not in off.model.card["provenance"]


@pytest.mark.parametrize("bad", [0, -3, "big", float("nan"), True])
def test_a_bad_object_diameter_names_the_field(bad):
    with pytest.raises(UserInputError, match="object_diameter"):
        TrainConfig(object_diameter=bad)
