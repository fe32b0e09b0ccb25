"""The training core: learning, sparse labels, stop, exact resume, determinism and bad input.

Everything trains a tiny U-Net (depth 2, a few filters, 32-pixel patches) on made-up images of
bright discs on a dark background, for a few batches: seconds, not minutes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.common.errors import ShapeError, UserInputError
from napari_unet.training.arrays import prepare_data, train
from napari_unet.training.augment import AugmentConfig
from napari_unet.training.config import TrainConfig
from napari_unet.training.data.batches import default_workers, draw_batch
from napari_unet.training.data.pairs import PatchSampler, TrainingPair
from napari_unet.training.events import BatchEnd, CheckpointSaved, EpochEnd, TrainResult
from napari_unet.training.loop import train_iter
from napari_unet.training.validation import evaluate_crops

TINY = dict(
    depth=2,
    base_filters=4,
    patch_size=32,
    batch_size=2,
    steps_per_epoch=3,
    epochs=2,
    device="cpu",
)


def discs(seed: int, size: int = 64, n: int = 5, ndim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image of ``n`` bright discs (balls in 3D) and their instance labels."""
    rng = np.random.default_rng(seed)
    shape = (size,) * ndim if ndim == 2 else (16, size, size)
    grid = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    for i in range(n):
        centre = [rng.integers(6, s - 6) for s in shape]
        radius = rng.uniform(4, 7)
        labels[sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2] = i + 1
    image = np.where(labels > 0, 200.0, 20.0) + rng.normal(0, 15, shape)
    return image.astype(np.float32), labels


def dataset(count: int = 3, **kwargs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, labels = zip(*(discs(seed, **kwargs) for seed in range(count)))
    return list(images), list(labels)


def run(gen, stop_after: int | None = None, stop: threading.Event | None = None):
    """Drive a training generator; set ``stop`` on the ``stop_after``-th BatchEnd."""
    events = []
    while True:
        try:
            event = next(gen)
        except StopIteration as done:
            return events, done.value
        events.append(event)
        if stop_after is not None and sum(isinstance(e, BatchEnd) for e in events) == stop_after:
            stop.set()


def start(config: TrainConfig, count: int = 3, val=None, **kwargs):
    images, labels = dataset(count)
    pairs = prepare_data(images, labels, config)
    return train_iter(pairs, val, config, **kwargs)


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- learning -------------------------------------------------------------------------------
def test_a_few_seconds_of_training_lower_the_loss():
    config = TrainConfig(
        **{**TINY, "base_filters": 8, "epochs": 4, "steps_per_epoch": 8, "batch_size": 4},
        learning_rate=1e-2,
        augment=AugmentConfig.none(),
    )
    events, result = run(start(config))
    assert isinstance(result, TrainResult) and not result.stopped
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < 0.7 * losses[0], losses
    val = [h["val_loss"] for h in result.history]
    assert val[-1] < val[0]
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epochs] == [0, 1, 2, 3]
    assert [e.train_loss for e in epochs] == losses
    assert result.best_dice == max(h["val_dice"] for h in result.history) > 0.5
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert len(batches) == 32 and all(np.isfinite(b.loss) for b in batches)


# -- stop -----------------------------------------------------------------------------------
@pytest.mark.parametrize("stop_after", [2, 4])
def test_stop_is_honoured_within_one_batch(stop_after, tmp_path):
    stop = threading.Event()
    ckpt = tmp_path / "run.ckpt"
    config = TrainConfig(**TINY)
    events, result = run(
        start(config, stop=stop, checkpoint=ckpt), stop_after=stop_after, stop=stop
    )
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert len(batches) == stop_after
    assert result.stopped
    assert len(result.history) == stop_after // 3  # 3 steps per epoch
    # a mid-epoch stop still writes a checkpoint, at the exact position
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert saved[-1].path == str(ckpt) and ckpt.is_file()
    assert (saved[-1].epoch, saved[-1].step) == divmod(stop_after, 3)
    assert result.model.card["provenance"]["epochs_trained"] == stop_after // 3


def test_stop_keeps_the_best_model_so_far():
    stop = threading.Event()
    _, result = run(start(TrainConfig(**{**TINY, "epochs": 3}), stop=stop), 4, stop)
    assert result.stopped and result.best_epoch == 0 and len(result.history) == 1
    assert result.model.card["metrics"]["val_dice"] == result.history[0]["val_dice"]


# -- resume ---------------------------------------------------------------------------------
def test_resume_mid_epoch_continues_exactly(tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 3}, augment=AugmentConfig(), seed=3)
    straight_ckpt = tmp_path / "straight.ckpt"
    _, straight = run(start(config, checkpoint=straight_ckpt))

    ckpt = tmp_path / "stopped.ckpt"
    stop = threading.Event()
    _, first = run(start(config, checkpoint=ckpt, stop=stop), stop_after=5, stop=stop)
    assert first.stopped and len(first.history) == 1  # stopped in epoch 1, at step 2 of 3
    events, resumed = run(start(config, checkpoint=ckpt, resume=ckpt))
    batches = [e for e in events if isinstance(e, BatchEnd)]
    assert (batches[0].epoch, batches[0].step) == (1, 2)
    assert len(batches) == 9 - 5

    assert resumed.history == straight.history
    assert resumed.best_epoch == straight.best_epoch and not resumed.stopped
    assert_same_weights(state_of(resumed.model), state_of(straight.model))
    # the last weights and the optimizer state too, not only the kept best model
    a = torch.load(straight_ckpt, weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert_same_weights(a["model"], b["model"])
    assert a["position"] == b["position"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_same_weights(sa, sb)


def test_a_checkpoint_of_format_1_still_resumes(tmp_path):
    config = TrainConfig(**TINY)
    ckpt = tmp_path / "old.ckpt"
    run(start(config, checkpoint=ckpt))
    document = torch.load(ckpt, weights_only=True)
    document["format"] = "napari-unet-checkpoint/1"
    document["rng_numpy"] = "{}"  # /1 files also held a numpy generator state
    torch.save(document, ckpt)
    events, result = run(start(replace(config, epochs=3), resume=ckpt))
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [2]
    assert len(result.history) == 3


def test_resume_can_extend_the_number_of_epochs(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    run(start(TrainConfig(**{**TINY, "epochs": 1}), checkpoint=ckpt))
    events, result = run(start(TrainConfig(**{**TINY, "epochs": 2}), resume=ckpt))
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [1]
    assert [h["epoch"] for h in result.history] == [0, 1]


def test_resume_refuses_other_settings_data_or_files(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    run(start(TrainConfig(**{**TINY, "epochs": 1}), checkpoint=ckpt))
    with pytest.raises(UserInputError, match="different training settings"):
        run(start(TrainConfig(**{**TINY, "epochs": 2, "batch_size": 3}), resume=ckpt))
    with pytest.raises(UserInputError, match="different training data"):
        run(start(TrainConfig(**{**TINY, "epochs": 2}), count=4, resume=ckpt))
    with pytest.raises(UserInputError, match="not found"):
        run(start(TrainConfig(**TINY), resume=tmp_path / "missing.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="not a readable training checkpoint"):
        run(start(TrainConfig(**TINY), resume=bad))


# -- determinism ----------------------------------------------------------------------------
def test_same_seed_same_weights_other_seed_other_weights():
    images, labels = dataset()
    kwargs = {**TINY, "epochs": 1, "augment": AugmentConfig()}
    a = train(images, labels, seed=5, **kwargs)
    b = train(images, labels, seed=5, **kwargs)
    c = train(images, labels, seed=6, **kwargs)
    assert_same_weights(state_of(a.model), state_of(b.model))
    assert a.history == b.history
    assert not torch.equal(a.model.head.weight, c.model.head.weight)
    assert a.model.card["provenance"]["seed"] == 5 and c.model.card["provenance"]["seed"] == 6


# -- sparse annotation ----------------------------------------------------------------------
def _sparse(region_value=None):
    """Discs annotated in the left half only; the right half holds ``region_value`` or junk."""
    images, labels = dataset()
    regions = []
    for lab in labels:
        region = np.zeros(lab.shape, bool)
        region[:, :32] = True
        regions.append(region)
    return images, labels, regions


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_labels_outside_the_annotated_region_change_nothing(task):
    images, labels, regions = _sparse()
    if task == "semantic":
        labels = [(lab > 0).astype(np.uint8) for lab in labels]
    junk = []
    for i, lab in enumerate(labels):
        other = lab.copy()
        ids = (100, 200) if task == "instance" else (1, 5)  # 5: a class that is not there
        other[:, 52:] = np.random.default_rng(i).choice([0, *ids], (64, 12))  # far away
        junk.append(other)
    kwargs = {**TINY, "epochs": 1, "task": task}
    a = train(images, labels, regions=regions, **kwargs)
    b = train(images, junk, regions=regions, **kwargs)
    assert a.history == b.history
    assert a.model.num_classes == b.model.num_classes == (3 if task == "instance" else 2)
    assert_same_weights(state_of(a.model), state_of(b.model))


def test_an_ignore_label_equals_a_region_mask():
    images, labels, regions = _sparse()
    ignored = []
    for lab, region in zip(labels, regions):
        ignored.append(np.where(region, lab, 9999).astype(np.int32))
    zeroed = [np.where(region, lab, 0) for lab, region in zip(labels, regions)]
    kwargs = {**TINY, "epochs": 1}
    a = train(images, zeroed, regions=regions, **kwargs)
    b = train(images, ignored, ignore_label=9999, **kwargs)
    assert a.history == b.history
    assert_same_weights(state_of(a.model), state_of(b.model))


class _Oracle(torch.nn.Module):
    """A stand-in network whose argmax is a fixed foreground mask."""

    def __init__(self, foreground: np.ndarray):
        super().__init__()
        self.fg = torch.from_numpy(foreground)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(1, 3, *x.shape[2:])
        logits[:, 1][self.fg[None]] = 10.0
        return logits


def test_validation_dice_counts_annotated_pixels_only():
    target = np.zeros((8, 8), np.uint8)
    target[2:5, 2:5] = 1
    valid = np.zeros((8, 8), bool)
    valid[:, :6] = True
    pair = TrainingPair(np.zeros((1, 8, 8), np.float32), target, np.ones((8, 8), np.float32), valid)
    config = TrainConfig(**TINY)
    cpu = torch.device("cpu")
    perfect_where_valid = target > 0
    perfect_where_valid[:, 6:] = True  # wrong, but not annotated
    assert evaluate_crops(_Oracle(perfect_where_valid), [pair], config, cpu)[1] == 1.0
    half = np.zeros((8, 8), bool)
    half[2:5, 2:4] = True  # 6 of the 9 true pixels: Dice = 2 * 6 / (6 + 9)
    assert evaluate_crops(_Oracle(half), [pair], config, cpu)[1] == pytest.approx(0.8)
    empty = TrainingPair(pair.image, np.zeros_like(target), pair.weight, valid)
    assert evaluate_crops(_Oracle(np.zeros((8, 8), bool)), [empty], config, cpu)[1] == 1.0


# -- validation split -----------------------------------------------------------------------
def test_validation_fraction_holds_out_whole_images():
    images, labels = dataset(4)
    result = train(images, labels, val_fraction=0.25, **{**TINY, "epochs": 1})
    assert result.model.card["provenance"]["n_training_images"] == 3
    result = train(images, labels, val_fraction=0.0, **{**TINY, "epochs": 1})
    assert result.model.card["provenance"]["n_training_images"] == 4


def test_separate_validation_data_scores_but_does_not_train():
    images, labels = dataset(3)
    kwargs = {**TINY, "epochs": 2, "val_fraction": 0.0}
    on_train = train(images, labels, **kwargs)  # no split: validates on the training data
    same = train(images, labels, val_images=images, val_labels=labels, **kwargs)
    assert same.history == on_train.history
    vi, vl = zip(*(discs(seed) for seed in (10, 11)))
    other = train(images, labels, val_images=np.stack(vi), val_labels=np.stack(vl), **kwargs)
    assert [h["train_loss"] for h in other.history] == [h["train_loss"] for h in same.history]
    assert [h["val_loss"] for h in other.history] != [h["val_loss"] for h in same.history]
    assert other.model.card["provenance"]["n_training_images"] == 3


# -- 3D and semantic ------------------------------------------------------------------------
def test_3d_training_runs():
    images, labels = dataset(2, ndim=3)
    result = train(
        images,
        labels,
        ndim=3,
        **{**TINY, "patch_size": (8, 16, 16), "epochs": 1, "steps_per_epoch": 2},
    )
    assert result.model.ndim == 3 and result.model.num_classes == 3
    assert result.model.card["input"] == {"axes": "ZYX", "channels": 1}
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])


def test_semantic_training_with_three_classes():
    images, labels = dataset()
    classes = [np.where(lab > 0, 1 + lab % 2, 0).astype(np.uint8) for lab in labels]
    names = ("background", "even", "odd")
    result = train(images, classes, task="semantic", class_names=names, **TINY)
    assert result.model.num_classes == 3
    card = result.model.card
    assert card["task"] == "semantic" and card["class_names"] == list(names)
    assert set(card["metrics"]) >= {"val_dice", "best_epoch", "final_train_loss"}
    default = train(images, classes, task="semantic", **{**TINY, "epochs": 1})
    assert default.model.card["class_names"] == ["background", "class 1", "class 2"]


def test_instance_card_and_multichannel_images():
    images, labels = dataset(2)
    rgb = [np.stack([im, im / 2, im / 3], axis=-1) for im in images]
    result = train(rgb, labels, **{**TINY, "epochs": 1})
    card = result.model.card
    assert result.model.in_channels == 3 and card["input"] == {"axes": "YX", "channels": 3}
    assert card["class_names"] == ["background", "interior", "boundary"]
    assert set(card["provenance"]) >= {"data_fingerprint", "seed", "library_versions"}


# -- bad input ------------------------------------------------------------------------------
def test_no_pairs_or_unequal_counts():
    config = TrainConfig(**TINY)
    with pytest.raises(UserInputError, match="no training pairs"):
        prepare_data([], [], config)
    images, labels = dataset(2)
    with pytest.raises(UserInputError, match="2 images but 1 label"):
        prepare_data(images, labels[:1], config)


def test_shape_mismatch_names_both_shapes():
    image, labels = discs(0)
    with pytest.raises(ShapeError, match=r"\(64, 60\).*\(64, 64\)"):
        train([image[:, :60]], [labels], **TINY)
    with pytest.raises(ShapeError, match="spatial axes"):
        train([image], [labels[None]], **TINY)
    with pytest.raises(ShapeError, match="region mask"):
        train([image], [labels], regions=[np.ones((64, 60), bool)], **TINY)


def test_labels_all_background():
    image, labels = discs(0)
    with pytest.raises(UserInputError, match="background only"):
        train([image, image], [np.zeros_like(labels)] * 2, val_fraction=0.0, **TINY)


def test_image_smaller_than_a_patch():
    image, labels = discs(0, size=24)
    with pytest.raises(ShapeError, match=r"smaller than the patch.*--patch"):
        train([image], [labels], **TINY)


def test_patch_size_the_network_cannot_take():
    images, labels = dataset(1)
    with pytest.raises(ShapeError, match="nearest valid sizes are 28 or 32"):
        train(images, labels, **{**TINY, "patch_size": 30})


def test_other_bad_input():
    images, labels = dataset(1)
    with pytest.raises(UserInputError, match="whole-number label ids"):
        train(images, [labels[0].astype(np.float32)], **TINY)
    with pytest.raises(UserInputError, match="no annotated pixel"):
        train(images, labels, regions=[np.zeros((64, 64), bool)], **TINY)
    with pytest.raises(UserInputError, match="task must be one of"):
        TrainConfig(task="panoptic")
    with pytest.raises(UserInputError, match="epochs must be a whole number >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(UserInputError, match="1 images but 0 label images"):
        train(images, labels, val_images=images, **TINY)
    with pytest.raises(UserInputError, match="class ids in"):
        train(images, labels, task="semantic", num_classes=2, **TINY)


def test_the_card_records_the_median_object_diameter():
    """Objects are squares of known area, so their equivalent diameters are known exactly."""
    labels = np.zeros((64, 64), np.uint16)
    for i, side in enumerate((6, 8, 10)):
        labels[4 + 20 * i : 4 + 20 * i + side, 10 : 10 + side] = i + 1
    image = np.where(labels > 0, 200.0, 10.0).astype(np.float32)
    result = train([image, image], [labels, labels], **TINY, val_fraction=0.5)
    expected = 2 * np.sqrt(8 * 8 / np.pi)  # the median object is the 8x8 square
    assert result.model.card["object_diameter"] == pytest.approx(expected, abs=0.05)


def test_semantic_classes_count_the_validation_labels_too():
    config = TrainConfig(**{**TINY, "epochs": 1}, task="semantic")
    images, labels = dataset(2)
    train_labels = [(lab > 0).astype(np.uint8) for lab in labels]  # classes 0, 1
    val_labels = [np.where(labels[0] > 0, 2, 0).astype(np.uint8)]  # class 2 only here
    pairs = prepare_data(images, train_labels, config)
    val = prepare_data(images[:1], val_labels, config)
    _, result = run(train_iter(pairs, val, config))
    assert result.model.num_classes == 3


# -- batches --------------------------------------------------------------------------------
def test_each_batch_is_fixed_by_seed_epoch_and_step():
    config = TrainConfig(**TINY, augment=AugmentConfig(), seed=5)
    images, labels = dataset(2)
    sampler = PatchSampler(prepare_data(images, labels, config), config.patch_shape())
    first = draw_batch(sampler, config, epoch=1, step=2)
    draw_batch(sampler, config, epoch=0, step=0)  # drawing others in between changes nothing
    again = draw_batch(sampler, config, epoch=1, step=2)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    image, target, weight, valid = first
    assert image.shape == (2, 1, 32, 32) and image.dtype == torch.float32
    assert target.shape == weight.shape == valid.shape == (2, 32, 32)
    assert target.dtype == torch.int64 and valid.dtype == torch.bool
    for other in (draw_batch(sampler, config, 1, 3), draw_batch(sampler, config, 2, 2)):
        assert not torch.equal(other[0], image)
    other_seed = draw_batch(sampler, replace(config, seed=6), 1, 2)
    assert not torch.equal(other_seed[0], image)


def workers_change_nothing_but_speed() -> None:
    config = TrainConfig(**TINY, augment=AugmentConfig(), seed=2)
    _, alone = run(start(config, workers=0))
    _, helped = run(start(config, workers=2))
    assert alone.history == helped.history
    assert_same_weights(state_of(alone.model), state_of(helped.model))


def test_workers_change_nothing_but_speed():
    # in a child interpreter: DataLoader workers started inside the pytest process, once other
    # tests have loaded OpenVINO and Qt, make that process crash at exit under pytest-xvfb
    code = (
        "import sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]); "
        "import test_training; test_training.workers_change_nothing_but_speed()"
    )
    tests = str(Path(__file__).parent)
    child = subprocess.run([sys.executable, "-c", code, tests], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-3000:]


def test_default_workers():
    assert default_workers(torch.device("cpu")) == 0
    assert default_workers(torch.device("cpu"), "auto") == 0
    assert 0 <= default_workers(torch.device("cuda")) <= 8
    assert default_workers(torch.device("cpu"), 3) == 3
    assert default_workers(torch.device("cuda"), "2") == 2
    for bad in (-1, "x", 1.5):
        with pytest.raises(UserInputError, match="workers must be 'auto' or a whole number"):
            default_workers(torch.device("cpu"), bad)
