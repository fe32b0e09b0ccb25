"""Fine-tuning keeps the parent's batch-norm statistics (its scale and shift still learn);
training a new model, or asking for it, updates them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_unet.common.errors import UserInputError
from napari_unet.training import arrays
from napari_unet.training.config import TrainConfig


def _data():
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.int32)
    labels[8:24, 8:24] = 1
    labels[36:56, 30:50] = 2
    image = 5.0 * (labels > 0) + rng.normal(0, 1, labels.shape)
    return [image.astype(np.float32)], [labels]


def _norms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _fine_tune(model, **config):
    images, labels = _data()
    settings = dict(epochs=1, steps_per_epoch=3, batch_size=2, patch_size=32, seed=1)
    settings.update(tune_postprocessing=False, object_diameter=None, **config)
    return arrays.train(images, labels, model=model, **settings).model


def test_a_fine_tune_keeps_the_parents_statistics_and_learns_the_rest(tiny_model):
    parent = copy.deepcopy(tiny_model)
    tuned = _fine_tune(tiny_model)
    before, after = _norms(parent), _norms(tuned)
    assert before and len(before) == len(after)
    for old, new in zip(before, after):
        torch.testing.assert_close(new.running_mean, old.running_mean)
        torch.testing.assert_close(new.running_var, old.running_var)
    # the normalising layers' own weights and the convolutions did learn
    assert any(not torch.equal(o.weight, n.weight) for o, n in zip(before, after))
    pairs = zip(parent.parameters(), tuned.parameters())
    assert any(not torch.equal(p, q) for p, q in pairs)


def test_statistics_are_updated_when_asked_and_when_training_from_scratch(tiny_model):
    parent = copy.deepcopy(tiny_model)
    tuned = _fine_tune(tiny_model, freeze_norm_statistics=False)
    assert any(
        not torch.equal(o.running_mean, n.running_mean)
        for o, n in zip(_norms(parent), _norms(tuned))
    )
    images, labels = _data()
    fresh = arrays.train(
        images, labels, epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32,
        depth=2, base_filters=4, tune_postprocessing=False, object_diameter=None,
    ).model  # fmt: skip
    assert any(float(n.running_mean.abs().sum()) > 0 for n in _norms(fresh))


@pytest.mark.parametrize("value", ["yes", 1.0, "auto"])
def test_a_bad_value_is_refused_with_its_name(value):
    with pytest.raises(UserInputError, match="freeze_norm_statistics"):
        TrainConfig(freeze_norm_statistics=value)
