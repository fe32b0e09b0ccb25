"""Training: a generator that yields typed events, with stop, resume and a kept best model.

:func:`train_iter` is the one computation behind ``napari-unet train``, the U-Net Train widget
and :func:`train`. It yields :class:`BatchEnd`, :class:`EpochEnd` and :class:`CheckpointSaved`
events, checks a stop flag after every batch, and returns a :class:`TrainResult` holding the
best model (by validation Dice) and the history. A checkpoint (weights, optimizer, scheduler,
position) lets a stopped run continue exactly where it stopped. Batches come from
:mod:`.batches`, optionally prepared by background worker processes.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..common.device import resolve_device
from ..common.errors import UserInputError
from ..common.progress import run_to_end
from ..model.unet import UNet
from .batches import batches, default_workers
from .card import describe_origin, training_card
from .checkpoint import RunState, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import PatchSampler, TrainingPair, prepare_pair
from .losses import combined_loss

log = logging.getLogger(__name__)

__all__ = [
    "BatchEnd",
    "CheckpointSaved",
    "EpochEnd",
    "TrainConfig",
    "TrainResult",
    "prepare_data",
    "train",
    "train_iter",
]


# -- events -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchEnd:
    """One optimisation step is done."""

    epoch: int
    step: int
    steps: int
    loss: float
    lr: float


@dataclass(frozen=True)
class EpochEnd:
    """An epoch is done and validated."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_dice: float
    best_dice: float
    is_best: bool
    seconds: float


@dataclass(frozen=True)
class CheckpointSaved:
    """A resume checkpoint was written."""

    path: str
    epoch: int
    step: int


@dataclass
class TrainResult:
    """What training returns: the best model, its history, and whether it was stopped."""

    model: UNet
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_dice: float = float("nan")
    stopped: bool = False


# -- data ---------------------------------------------------------------------------------
def prepare_data(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    config: TrainConfig,
    *,
    regions: Sequence[np.ndarray | None] | None = None,
    names: Sequence[str] | None = None,
    ignore_label: int | None = None,
) -> list[TrainingPair]:
    """Check and convert raw (image, labels[, region]) arrays into training pairs."""
    if len(images) == 0:
        raise UserInputError("no training pairs given: pass at least one (image, labels) pair")
    if len(images) != len(labels):
        raise UserInputError(f"got {len(images)} images but {len(labels)} label images")
    regions = list(regions) if regions is not None else [None] * len(images)
    names = list(names) if names is not None else [f"pair {i}" for i in range(len(images))]
    return [
        prepare_pair(
            img,
            lab,
            ndim=config.ndim,
            task=config.task,
            region=reg,
            ignore_label=ignore_label,
            normalization=config.normalization,
            num_classes=config.num_classes,
            w0=config.w0,
            sigma=config.sigma,
            contact=config.contact_weight,
            name=name,
        )
        for img, lab, reg, name in zip(images, labels, regions, names)
    ]


def _split_validation(pairs: list[TrainingPair], fraction: float, seed: int) -> tuple[list, list]:
    if len(pairs) < 2 or fraction <= 0:
        log.warning("no separate validation data: validating on the training data")
        return pairs, pairs
    n_val = min(max(1, round(fraction * len(pairs))), len(pairs) - 1)
    order = np.random.default_rng(seed + 1).permutation(len(pairs))
    val = {int(i) for i in order[:n_val]}
    return [p for i, p in enumerate(pairs) if i not in val], [
        p for i, p in enumerate(pairs) if i in val
    ]


def _validation_crops(pairs: list[TrainingPair], model: UNet, max_size: int) -> list[TrainingPair]:
    """Deterministic centre crops of each validation image, of a size the network takes."""
    crops = []
    for p in pairs:
        sizes = []
        for n in p.spatial_shape:
            below = model.valid_sizes_near(min(n, max_size))[0]
            if below is None:
                break
            sizes.append(below)
        if len(sizes) != len(p.spatial_shape):
            continue
        sl = tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(p.spatial_shape, sizes))
        crops.append(
            TrainingPair(
                p.image[(slice(None), *sl)], p.target[sl], p.weight[sl], p.valid[sl], p.name
            )
        )
    if not crops:
        raise UserInputError(
            "every validation image is smaller than the smallest size the network takes"
        )
    return crops


# -- the loop -----------------------------------------------------------------------------
def train_iter(
    train_pairs: Sequence[TrainingPair],
    val_pairs: Sequence[TrainingPair] | None = None,
    config: TrainConfig | None = None,
    *,
    model: UNet | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    stop: threading.Event | None = None,
    workers: int | str = 0,
) -> Generator[BatchEnd | EpochEnd | CheckpointSaved, None, TrainResult]:
    """Train a U-Net, yielding events; returns a :class:`TrainResult`.

    Parameters
    ----------
    train_pairs : sequence of TrainingPair
        From :func:`prepare_data`.
    val_pairs : sequence of TrainingPair, optional
        Validation data; by default ``config.val_fraction`` of the pairs is held out.
    config : TrainConfig
    model : UNet, optional
        Start from this network (fine-tuning) instead of a new one.
    checkpoint : path, optional
        Write a resume checkpoint here after every epoch and when stopped.
    resume : path, optional
        Continue from this checkpoint (same data and config).
    stop : threading.Event, optional
        Set it to stop after the current batch; the best model so far is returned.
    workers : int or "auto", default 0
        Background processes that prepare batches while the network trains; the result is the
        same for any number. ``"auto"``: none on the CPU, up to 8 with a GPU, where one
        process cannot prepare batches as fast as the GPU consumes them.
    """
    config = config or TrainConfig()
    stop = stop or threading.Event()
    torch.manual_seed(config.seed)
    train_pairs = list(train_pairs)
    if val_pairs is None:
        train_pairs, val_pairs = _split_validation(train_pairs, config.val_fraction, config.seed)
    # the validation data may hold the highest class id
    num_classes = config.resolved_num_classes([*train_pairs, *val_pairs])
    initialized_from = describe_origin(model) if model is not None else None
    if model is None:
        model = new_model(config, train_pairs[0].image.shape[0], num_classes)
    _check_model(model, train_pairs, num_classes)
    patch = config.patch_shape()
    model.check_input_shape(patch)
    device = resolve_device(config.device)
    workers = default_workers(device, workers)
    model.to(device)
    # channels-last convolutions train faster: 1.5-1.7x on an H100, 1.2x on the CPU
    # (benchmarks/bench_training.py)
    layout = _layout(device, config.ndim)
    model.to(memory_format=layout)
    sampler = PatchSampler(train_pairs, patch, config.foreground_fraction)
    val_crops = _validation_crops(list(val_pairs), model, config.val_crop_size)
    steps = config.steps_per_epoch or _default_steps(train_pairs, patch, config.batch_size)
    total_steps = steps * config.epochs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps))
    state = RunState()
    if resume is not None:
        load_checkpoint(resume, model, optimizer, scheduler, state, config, train_pairs)

    for epoch in range(state.epoch, config.epochs):
        t0 = time.perf_counter()
        model.train()
        stream = batches(sampler, config, epoch, state.step, steps, device, workers, layout)
        for step, batch in enumerate(stream, start=state.step):
            loss = _train_step(model, optimizer, batch, config)
            scheduler.step()
            state.loss_sum += loss
            state.loss_count += 1
            state.step = step + 1
            yield BatchEnd(epoch, step, steps, loss, scheduler.get_last_lr()[0])
            if stop.is_set():
                break
        stream.close()  # stops the workers now, not when garbage-collected
        if stop.is_set() and state.step < steps:
            state.epoch = epoch
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, scheduler, state, config, train_pairs)
                yield CheckpointSaved(str(checkpoint), state.epoch, state.step)
            break
        val_loss, val_dice = evaluate_crops(model, val_crops, config, device)
        train_loss = state.loss_sum / max(state.loss_count, 1)
        is_best = val_dice > state.best_dice or state.best_state is None
        if is_best:
            state.best_dice, state.best_epoch = val_dice, epoch
            state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_dice": val_dice,
                "lr": scheduler.get_last_lr()[0],
            }
        )
        state.epoch, state.step, state.loss_sum, state.loss_count = epoch + 1, 0, 0.0, 0
        yield EpochEnd(
            epoch,
            config.epochs,
            train_loss,
            val_loss,
            val_dice,
            state.best_dice,
            is_best,
            time.perf_counter() - t0,
        )
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, scheduler, state, config, train_pairs)
            yield CheckpointSaved(str(checkpoint), state.epoch, state.step)
        if stop.is_set():
            break
    return _finish(
        model, state, config, train_pairs, stopped=stop.is_set(), initialized_from=initialized_from
    )


def new_model(config: TrainConfig, in_channels: int, num_classes: int) -> UNet:
    """A new, randomly initialised ``"same"``-padded U-Net with ``config``'s architecture."""
    return UNet(
        in_channels,
        num_classes,
        ndim=config.ndim,
        depth=config.depth,
        base_filters=config.base_filters,
        batch_norm=config.batch_norm,
        padding="same",
    )


def _layout(device: torch.device, ndim: int) -> torch.memory_format:
    """Channels-last for 2D training on CUDA and the CPU; the default layout for 3D and MPS."""
    if device.type in ("cuda", "cpu") and ndim == 2:
        return torch.channels_last
    return torch.contiguous_format


def _check_model(model: UNet, pairs: list[TrainingPair], num_classes: int) -> None:
    channels = pairs[0].image.shape[0]
    if any(p.image.shape[0] != channels for p in pairs):
        raise UserInputError("all training images must have the same number of channels")
    if model.in_channels != channels:
        raise UserInputError(
            f"the model takes {model.in_channels} channel(s), the images have {channels}"
        )
    if model.num_classes != num_classes:
        raise UserInputError(
            f"the model has {model.num_classes} classes, the task needs {num_classes}"
        )
    if model.ndim != pairs[0].target.ndim:
        raise UserInputError(f"the model is {model.ndim}D, the data is {pairs[0].target.ndim}D")


def _default_steps(pairs: list[TrainingPair], patch: tuple[int, ...], batch: int) -> int:
    pixels = sum(int(p.valid.sum()) for p in pairs)
    return int(np.clip(round(pixels / math.prod(patch) / batch), 10, 200))


def _warmup_cosine(total_steps: int):
    warmup = max(1, min(200, total_steps // 20))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _train_step(model: UNet, optimizer: torch.optim.Optimizer, batch, config: TrainConfig) -> float:
    image, target, weight, valid = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(image)
    loss = combined_loss(logits, target, weight, valid, config.dice_weight)
    loss.backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return float(loss.detach())


def evaluate_crops(
    model: UNet, crops: Sequence[TrainingPair], config: TrainConfig, device: torch.device
) -> tuple[float, float]:
    """Mean loss and pooled foreground Dice of ``model`` on validation crops.

    Dice is computed on the foreground (any class > 0) of the argmax, over valid pixels only,
    pooled over all crops: ``2 |P & G| / (|P| + |G|)``, 1.0 when both are empty.
    """
    model.eval()
    losses, inter, total = [], 0, 0
    with torch.inference_mode():
        for c in crops:
            x = torch.from_numpy(np.ascontiguousarray(c.image[None])).to(device)
            logits = model(x)
            t = torch.from_numpy(c.target[None].astype(np.int64)).to(device)
            w = torch.from_numpy(c.weight[None]).to(device)
            v = torch.from_numpy(c.valid[None]).to(device)
            losses.append(float(combined_loss(logits, t, w, v, config.dice_weight)))
            pred_fg = (logits.argmax(1) > 0) & v
            true_fg = (t > 0) & v
            inter += int((pred_fg & true_fg).sum())
            total += int(pred_fg.sum() + true_fg.sum())
    dice = 1.0 if total == 0 else 2 * inter / total
    return float(np.mean(losses)), float(dice)


# -- the result ---------------------------------------------------------------------------
def _finish(
    model: UNet,
    state: RunState,
    config: TrainConfig,
    pairs,
    stopped: bool,
    initialized_from: dict[str, Any] | None = None,
) -> TrainResult:
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    model.card = training_card(model, state, config, pairs, initialized_from)
    return TrainResult(model, list(state.history), state.best_epoch, state.best_dice, stopped)


def train(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    regions: Sequence[np.ndarray | None] | None = None,
    ignore_label: int | None = None,
    model: UNet | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    **config: Any,
) -> TrainResult:
    """Train a U-Net on arrays and return the best model and its history.

    Parameters
    ----------
    images, labels : sequences of ndarray
        Images ``(*spatial)`` or with one channel axis, and their labels ``(*spatial)``.
    val_images, val_labels : sequences of ndarray, optional
        Validation data; by default a fraction of the pairs is held out.
    regions : sequence of bool ndarray or None, optional
        Where each label image is valid (sparse annotation).
    ignore_label : int, optional
        Label value of unannotated pixels.
    model, checkpoint, resume
        As in :func:`train_iter`.
    **config
        Fields of :class:`TrainConfig` (``epochs``, ``patch_size``, ``batch_size``, ``task``,
        ``depth``, ``base_filters``, ``seed``, ...).

    Returns
    -------
    TrainResult
        ``result.model`` (its ``card`` is filled in) and ``result.history``.

    Examples
    --------
    >>> result = train([image], [labels], epochs=5, patch_size=64)  # doctest: +SKIP
    >>> save_model(result.model, "my_model.safetensors")  # doctest: +SKIP
    """
    cfg = TrainConfig(**config)
    pairs = prepare_data(images, labels, cfg, regions=regions, ignore_label=ignore_label)
    val = None
    if val_images is not None:
        val_labels = [] if val_labels is None else val_labels
        val = prepare_data(val_images, val_labels, cfg, ignore_label=ignore_label)
    gen = train_iter(pairs, val, cfg, model=model, checkpoint=checkpoint, resume=resume)
    return run_to_end(gen, _log_epoch)


def _log_epoch(event: BatchEnd | EpochEnd | CheckpointSaved) -> None:
    if isinstance(event, EpochEnd):
        log.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, val Dice %.4f",
            event.epoch + 1,
            event.epochs,
            event.train_loss,
            event.val_loss,
            event.val_dice,
        )
