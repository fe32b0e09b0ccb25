"""Correct and retrain's recipe (issue 26): one image is judged on a held-back strip of itself,
the decoder alone learns, the parent's post-processing is kept, and the network learns from the
image as Segment's network saw it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.common.errors import UserInputError
from napari_unet.training.arrays import prepare_data
from napari_unet.training.config import TrainConfig
from napari_unet.training.loop import ENCODER_PREFIXES, train_iter
from napari_unet.training.validation import (
    MIN_STRIP,
    on_strips,
    split_strips,
    split_validation,
    strip_slices,
)


def _blobs(shape=(64, 96), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    n = 0
    for y in range(6, shape[0] - 10, 16):
        for x in range(6, shape[1] - 10, 16):
            n += 1
            labels[y : y + 9, x : x + 9] = n
    image = (labels > 0).astype(np.float32) + 0.05 * rng.standard_normal(shape).astype(np.float32)
    return image, labels


def test_a_strip_at_the_end_of_the_longest_side_is_held_back():
    train, held = strip_slices((64, 256), 0.25)
    assert train == (slice(None), slice(0, 192)) and held == (slice(None), slice(192, 256))
    train, held = strip_slices((8, 512, 100), 0.25)  # 3D: Y is the longest of Y and X
    assert held == (slice(None), slice(384, 512), slice(None))
    assert strip_slices((64, 2 * MIN_STRIP - 8), 0.25) is None  # too narrow to cut
    assert strip_slices((256, 256), 0.0) is None


def test_one_image_is_split_into_a_training_part_and_a_held_back_strip():
    config = TrainConfig(patch_size=32)
    pairs = prepare_data(*map(list, zip(_blobs())), config)
    train, val = split_validation(pairs, 0.1, 0, hold_back=0.25)
    assert on_strips(val) and not on_strips(train)
    assert train[0].spatial_shape == (64, 64) and val[0].spatial_shape == (64, 32)
    np.testing.assert_array_equal(val[0].labels, pairs[0].labels[:, 64:])
    # two images: one of them is held back whole, as before
    two = prepare_data(*map(list, zip(_blobs(), _blobs(seed=1))), config)
    assert split_strips(two, 0.25) is None
    train, val = split_validation(two, 0.1, 0, hold_back=0.25)
    assert len(train) == len(val) == 1 and not on_strips(val)
    # a strip without an annotated object cannot judge: the training image validates
    image, labels = _blobs()
    labels[:, 60:] = 0
    lone = prepare_data([image], [labels], config)
    assert split_strips(lone, 0.25) is None


def test_the_decoder_alone_learns_and_the_parents_post_processing_is_kept(tiny_model):
    import copy

    parent = copy.deepcopy(tiny_model)
    parent.card = {**parent.card, "postprocessing": {"seed_threshold": 0.6, "min_size": 5}}
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32,
                         learning_rate=1e-2, train_layers="decoder", object_diameter=None,
                         device="cpu")  # fmt: skip
    pairs = prepare_data(*map(list, zip(_blobs())), config)
    gen = train_iter(pairs, None, config, model=parent)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            result = done.value
            break
    after = result.model.state_dict()
    moved = {k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())}
    weights = [k for k in before if k.endswith("weight")]
    assert not any(k.startswith(ENCODER_PREFIXES) for k in moved)  # the encoder is kept
    assert any(k in moved for k in weights if not k.startswith(ENCODER_PREFIXES))
    assert all(p.requires_grad for p in result.model.parameters())  # free for a later run
    post = result.model.card["postprocessing"]
    assert post["seed_threshold"] == 0.6 and post["min_size"] == 5
    assert "held-back strip" in post["chosen_by"]


def test_the_decoder_alone_needs_a_model_to_start_from():
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, patch_size=32, depth=1,
                         base_filters=2, train_layers="decoder", object_diameter=None)  # fmt: skip
    pairs = prepare_data(*map(list, zip(_blobs())), config)
    with pytest.raises(UserInputError, match="train_layers='decoder'"):
        next(train_iter(pairs, None, config))
    with pytest.raises(UserInputError, match="train_layers"):
        TrainConfig(train_layers="encoder")


def test_the_network_learns_from_what_segment_gives_it():
    from napari_unet.inference.pipeline import model_input

    image, _ = _blobs((96, 128))
    bright = (200 - 150 * image).clip(0, 255).astype(np.uint8)  # dark nuclei on a bright field
    seen, model, choice = model_input(bright)
    assert choice.inverted and model.card["name"] == "nuclei"
    assert seen.shape == bright.shape and np.corrcoef(seen.ravel(), image.ravel())[0, 1] > 0.9
    kept, _, choice = model_input(bright, invert="no")
    assert not choice.inverted and np.corrcoef(kept.ravel(), image.ravel())[0, 1] < -0.9
    with pytest.raises(UserInputError, match="time axis"):
        model_input(np.zeros((3, 64, 64), np.uint8), axes="TYX")


def test_retrain_learns_from_the_corrected_image_as_the_network_saw_it():
    from napari_unet._napari.segment._retrain import _as_the_network_saw_them
    from napari_unet._napari.train._train_inputs import PairSource

    image, labels = _blobs((96, 128))
    bright = (200 - 150 * image).clip(0, 255).astype(np.uint8)
    inverted = {"axes": "YX", "channel": None, "inverted": True}
    rgb = np.stack([bright, (bright * 0.8).astype(np.uint8), bright], axis=-1)  # stained-ish
    he = {"axes": "YXC", "channel": None, "inverted": False}
    sources = [
        PairSource("bf", "bf labels", bright, labels, choice=inverted),
        PairSource("he", "he labels", rgb, labels, rgb=True, choice=he),
    ]
    (stained,), prepared = _as_the_network_saw_them(sources[1:], "nuclei-he")
    assert prepared
    assert stained.image.shape == (3, 96, 128) and not stained.rgb  # optical density, CYX
    # a result without Segment's decisions (a 3D one, or an older layer) stays as it is
    plain = PairSource("x", "x labels", bright, labels)
    (same,), prepared = _as_the_network_saw_them([plain], "nuclei")
    assert same is plain and not prepared
    (grey,), _ = _as_the_network_saw_them(sources[:1], "nuclei")
    assert np.corrcoef(grey.image.ravel(), image.ravel())[0, 1] > 0.9  # inverted as segmented


def test_the_retrain_status_says_the_time_left():
    from napari_unet._napari.segment._retrain import time_left
    from napari_unet.training.events import BatchEnd

    first = BatchEnd(epoch=0, step=0, steps=10, loss=0.5, lr=1e-3)  # start-up: no pace yet
    assert time_left(first, 2, first=100.0, now=100.0) == "batch 1/20"
    event = BatchEnd(epoch=0, step=4, steps=10, loss=0.5, lr=1e-3)  # 4 batches in 8 s
    assert time_left(event, 2, first=100.0, now=108.0) == "batch 5/20, about 30 s left"
    last = BatchEnd(epoch=1, step=9, steps=10, loss=0.5, lr=1e-3)
    assert time_left(last, 2, first=100.0, now=140.0) == "batch 20/20, about 0 s left"


def test_retrain_keeps_the_stain_and_blur_augmentation_its_model_learnt_with():
    from napari_unet import load_model
    from napari_unet._napari.train._train_job import retrain_augment
    from napari_unet.training.augment import AugmentConfig

    he = retrain_augment("nuclei-he")  # learnt with channel mixing and blur
    learnt = load_model("nuclei-he").card["provenance"]["training"]["augment"]
    assert (he.stain, he.blur) == (learnt["stain"], learnt["blur"]) and he.stain > 0
    assert he.zoom == AugmentConfig().zoom  # the rest: a fine-tune's defaults
    for grey in ("nuclei", None):  # learnt without them
        assert retrain_augment(grey) == AugmentConfig()
    model = load_model("nuclei")
    model.card = {"provenance": {"training": {"augment": {"stain": "much"}}}}  # foreign card
    assert retrain_augment(model) == AugmentConfig()


def test_train_init_keeps_the_augmentation_its_model_learnt_with_unless_given(capsys):
    import argparse

    from napari_unet import load_model
    from napari_unet.cli.train import _keep_learnt_augmentation
    from napari_unet.training.config import TrainConfig

    card = load_model("nuclei-he").card
    learnt = card["provenance"]["training"]["augment"]

    def run(**given):
        args = argparse.Namespace(no_augment=False, stain_jitter=None, blur=None, init="he")
        args.__dict__.update(given)
        return _keep_learnt_augmentation(TrainConfig(), args, card).augment

    kept = run()
    assert (kept.stain, kept.blur) == (learnt["stain"], learnt["blur"])
    said = capsys.readouterr().err
    assert f"augmentation: --stain-jitter {learnt['stain']:g} and --blur {learnt['blur']:g}" in said
    assert "as nuclei-he learnt with" in said
    mine = run(stain_jitter=0.05)  # a given value wins; the other is still kept
    assert (mine.stain, mine.blur) == (0.0, learnt["blur"])  # (given values enter earlier)
    assert "augmentation: --blur" in capsys.readouterr().err
    assert run(no_augment=True) == TrainConfig().augment
    grey = load_model("nuclei").card  # learnt without: nothing changes, nothing said
    args = argparse.Namespace(no_augment=False, stain_jitter=None, blur=None, init="nuclei")
    assert _keep_learnt_augmentation(TrainConfig(), args, grey) == TrainConfig()
    assert "augmentation" not in capsys.readouterr().err
