"""Post-processing tuned per model: the search, and its place at the end of every training run."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.common.errors import UserInputError
from napari_unet.evaluation.instances import average_precision
from napari_unet.inference.labels.postprocess import instance_labels
from napari_unet.inference.pipeline import postprocessing_settings
from napari_unet.training.arrays import prepare_data, train
from napari_unet.training.config import TrainConfig
from napari_unet.training.data.targets import instance_to_classes
from napari_unet.training.finishing.tune import KEYS, TunedPostprocessing, TuneProgress, search
from napari_unet.training.loop import train_iter
from test_training import TINY, dataset, run

SMALL_GRID = {
    "seed_threshold": (0.5, 0.8),
    "foreground_threshold": (0.5,),
    "split": (0.0, 1.0),
    "min_size": (5, 40),
}


def touching_discs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels of pairs of touching discs, and blurred class probabilities of them.

    The blur merges the interiors of touching discs above a low seed threshold, and two small
    specks of false foreground sit in the background, so the grid rows score differently.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    labels = np.zeros((96, 96), np.int32)
    for i, (cy, cx) in enumerate([(24, 20), (24, 34), (70, 60), (70, 74)]):
        r = rng.uniform(6.5, 7.5)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2) & (labels == 0)] = i + 1
    onehot = np.eye(3, dtype=np.float32)[instance_to_classes(labels)].transpose(2, 0, 1)
    probs = np.stack([ndi.gaussian_filter(p, 2.0) for p in onehot])
    probs /= probs.sum(0, keepdims=True)
    for y, x in [(50, 10), (10, 80)]:  # two specks of 4x4 px, false objects
        probs[:, y : y + 4, x : x + 4] = np.array([0.05, 0.9, 0.05])[:, None, None]
    return probs, labels


def test_the_search_scores_each_row_as_the_pipeline_would_and_keeps_the_best():
    probs, truths = zip(*(touching_discs(s) for s in range(2)))
    result = search(probs, truths, SMALL_GRID)
    assert isinstance(result, TunedPostprocessing) and result.n_images == 2
    assert len(result.table) == 2 * 1 * 2 * 2
    for row in result.table:
        settings = {k: row[k] for k in KEYS}
        aps = [average_precision(t, instance_labels(p, **settings)) for p, t in zip(probs, truths)]
        assert row["mean_ap"] == pytest.approx(np.mean([a.mean for a in aps]))
        assert row["ap50"] == pytest.approx(np.mean([a.scores[0] for a in aps]))
    best = max(row["mean_ap"] for row in result.table)
    assert result.mean_ap == best > min(row["mean_ap"] for row in result.table)
    # the two specks must go (min_size 40) and the blurred pairs must be split
    assert result.settings["min_size"] == 40 and result.ap50 == 1.0


def test_the_search_ignores_objects_outside_the_annotated_region():
    probs, truth = touching_discs(0)
    region = np.zeros(truth.shape, bool)
    region[:48] = True  # the upper pair only
    hidden = truth.copy()
    hidden[48:] = 0  # an annotation that stops at the region's edge
    result = search([probs], [hidden], SMALL_GRID, regions=[region])
    assert result.ap50 == 1.0


def test_bad_grid_or_data():
    probs, truth = touching_discs(0)
    with pytest.raises(UserInputError, match="seed_thresh"):
        search([probs], [truth], {"seed_thresh": (0.5,)})
    with pytest.raises(UserInputError, match="empty"):
        search([probs], [truth], {"split": ()})
    with pytest.raises(UserInputError, match="at least one image"):
        search([], [])


def test_a_freshly_trained_model_carries_tuned_post_processing():
    """Every run (here Python's ``train_iter``) ends with the search; the card carries it."""
    config = TrainConfig(**{**TINY, "epochs": 1}, val_fraction=0.5)
    images, labels = dataset(4)
    events, result = run(train_iter(prepare_data(images, labels, config), None, config))
    progress = [e for e in events if isinstance(e, TuneProgress)]
    assert progress and progress[-1].done == progress[-1].total
    assert isinstance(events[-1], TunedPostprocessing) and events[-1] is result.postprocessing
    card = result.model.card
    post = card["postprocessing"]
    assert {k: post[k] for k in KEYS} == result.postprocessing.settings
    assert post["n_images"] == 2 and "validation mean AP" in post["chosen_by"]
    assert card["metrics"]["val_ap50"] == round(result.postprocessing.ap50, 4)
    assert 0.0 <= card["metrics"]["val_mean_ap"] <= card["metrics"]["val_ap50"] <= 1.0
    # Segment uses them
    assert postprocessing_settings(result.model) == result.postprocessing.settings


def test_tuning_can_be_switched_off_and_semantic_models_have_none():
    images, labels = dataset(2)
    off = train(images, labels, **{**TINY, "epochs": 1}, tune_postprocessing=False)
    assert off.postprocessing is None and "postprocessing" not in off.model.card
    assert "val_ap50" not in off.model.card["metrics"]
    semantic = train(images, [(lab > 0).astype(np.uint8) for lab in labels], task="semantic",
                     **{**TINY, "epochs": 1})  # fmt: skip
    assert semantic.postprocessing is None and "postprocessing" not in semantic.model.card


def test_a_fine_tune_without_held_out_images_keeps_the_model_s_post_processing():
    """Settings chosen on the training image itself would fit it, not new images."""
    from napari_unet.training.loop import new_model

    config = TrainConfig(**{**TINY, "epochs": 1})
    images, labels = dataset(1, size=128, n=12)  # one image: a strip of it or itself validates
    mine = {"seed_threshold": 0.7, "foreground_threshold": 0.5, "split": 1.0, "min_size": 15}
    for hold_back, why in ((0.0, "no held-out validation images"), (0.25, "held-back strip")):
        model = new_model(config, 1, 3)
        model.card = {"postprocessing": mine}
        cfg = TrainConfig(**{**TINY, "epochs": 1, "hold_back": hold_back})
        _, result = run(train_iter(prepare_data(images, labels, cfg), None, cfg, model=model))
        kept = result.model.card["postprocessing"]
        assert result.postprocessing is None and {**kept, "chosen_by": None} == {
            **mine,
            "chosen_by": None,
        }
        assert why in kept["chosen_by"]  # the card says where its settings came from
