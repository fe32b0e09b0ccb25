"""The fine-tuning learning rate: Python train(model=...) uses 1e-4 when no rate is given, as
`train --init` and the Train dock do; Correct and retrain has its own quick recipe (the decoder
alone, at 1e-3: tests/test_quick_retrain.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.training import arrays
from napari_unet.training.config import FINE_TUNE_LR, TrainConfig


@pytest.fixture
def used_config(monkeypatch):
    """The TrainConfig that train() hands to the training loop (the loop is not run)."""
    seen: list[TrainConfig] = []

    def fake_train_iter(pairs, val, cfg, **kwargs):
        seen.append(cfg)
        return None
        yield  # a generator, like train_iter

    monkeypatch.setattr(arrays, "train_iter", fake_train_iter)
    return seen


def _data():
    labels = np.zeros((48, 48), np.int32)
    labels[10:20, 10:20] = 1
    labels[30:40, 25:35] = 2
    image = (labels > 0).astype(np.float32) + 0.1
    return [image], [labels]


def test_fine_tuning_defaults_to_the_fine_tune_rate(used_config, tiny_model):
    images, labels = _data()
    arrays.train(images, labels, model=tiny_model, epochs=1, patch_size=32)
    assert used_config[-1].learning_rate == FINE_TUNE_LR == 1e-4


def test_a_given_rate_and_training_from_scratch_keep_theirs(used_config, tiny_model):
    images, labels = _data()
    arrays.train(images, labels, model=tiny_model, learning_rate=5e-4, epochs=1, patch_size=32)
    assert used_config[-1].learning_rate == 5e-4
    arrays.train(images, labels, epochs=1, patch_size=32, depth=2, base_filters=4)
    assert used_config[-1].learning_rate == TrainConfig().learning_rate == 1e-3


def test_every_face_fine_tunes_at_the_same_rate():
    from napari_unet._napari.segment import _retrain
    from napari_unet._napari.train import _train_settings

    assert _retrain.FINE_TUNE_LR == _train_settings.FINE_TUNE_LR == FINE_TUNE_LR
