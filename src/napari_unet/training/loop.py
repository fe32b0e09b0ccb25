"""Training: a generator that yields typed events, with stop, resume and a kept best model.

:func:`train_iter` is the one computation behind ``napari-unet train``, the U-Net Train widget
and :func:`.arrays.train`. It yields :class:`BatchEnd`, :class:`EpochEnd` and :class:`CheckpointSaved`
events, checks a stop flag after every batch, and returns a :class:`TrainResult` holding the
best model (by validation Dice) and the history. A checkpoint (weights, optimizer, scheduler,
position) lets a stopped run continue exactly where it stopped. Batches come from
:mod:`.data.batches`, optionally prepared by background worker processes.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch

from ..common.device import resolve_device
from ..common.errors import UserInputError
from ..model.unet import UNet
from .checkpoint import RunState, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data.batches import batches, default_workers
from .data.pairs import PatchSampler, TrainingPair
from .data.working_size import resolve_working_size, to_working_size
from .ddp import Ranks
from .events import BatchEnd, CheckpointSaved, EpochEnd, TrainResult
from .finishing.card import describe_origin, training_card
from .finishing.size_fit import fit_size_model
from .finishing.tune import TunedPostprocessing, TuneProgress, tune_model_iter
from .losses import combined_loss
from .validation import evaluate_crops, on_strips, split_validation, validation_crops

log = logging.getLogger(__name__)

__all__ = ["TrainEvent", "new_model", "train_iter"]

#: what :func:`train_iter` yields
TrainEvent = BatchEnd | EpochEnd | CheckpointSaved | TuneProgress | TunedPostprocessing


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
) -> Generator[TrainEvent, None, TrainResult]:
    """Train a U-Net, yielding events; returns a :class:`TrainResult`.

    After the last epoch the best network's instance post-processing is chosen on the
    validation images (:mod:`.finishing.tune`; ``config.tune_postprocessing``): the run yields
    :class:`~.finishing.tune.TuneProgress` events and, at the end, the
    :class:`~.finishing.tune.TunedPostprocessing`.

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
        train_pairs, val_pairs = split_validation(
            train_pairs, config.val_fraction, config.seed, config.hold_back
        )
    held_out = val_pairs is not train_pairs
    # every image at the object size the network works at (the card's object_diameter)
    working = resolve_working_size(train_pairs, config, model)
    factors: list[float] = []
    if working is not None:
        same = not held_out
        patch = config.patch_shape()
        train_pairs, factors = to_working_size(train_pairs, working.diameter, config, patch)
        val_pairs = (
            train_pairs if same else to_working_size(val_pairs, working.diameter, config, patch)[0]
        )
    # the validation data may hold the highest class id
    num_classes = config.resolved_num_classes([*train_pairs, *val_pairs])
    if held_out and not any(np.any((p.target > 0) & p.valid) for p in val_pairs):
        log.warning(
            "the validation labels hold no object: the validation Dice and AP cannot measure "
            "the model, and the 'best' epoch is chosen on nothing; give validation images "
            "with annotated objects"
        )
    initialized_from = describe_origin(model) if model is not None else None
    freeze_norm = config.freeze_norm_statistics
    if freeze_norm is None:  # a fine-tune keeps its parent's statistics
        freeze_norm = initialized_from is not None
    if model is None:
        model = new_model(config, train_pairs[0].image.shape[0], num_classes)
    _check_model(model, train_pairs, num_classes)
    patch = config.patch_shape()
    model.check_input_shape(patch)
    ranks = Ranks.from_environment(resolve_device(config.device))  # torchrun: data-parallel
    device = ranks.device(resolve_device(config.device))  # see training/ddp.py
    checkpoint = checkpoint if ranks.is_main else None
    workers = default_workers(device, workers)
    model.to(device)
    # channels-last convolutions train faster: 1.5-1.7x on an H100, 1.2x on the CPU
    # (benchmarks/bench_training.py)
    layout = _layout(device, config.ndim)
    model.to(memory_format=layout)
    net = ranks.wrap(model)
    sampler = PatchSampler(train_pairs, patch, config.foreground_fraction)
    val_crops = validation_crops(list(val_pairs), model, config.val_crop_size)
    steps = config.steps_per_epoch or _default_steps(train_pairs, patch, config.batch_size)
    total_steps = steps * config.epochs
    learning = _learning_parameters(model, config.train_layers, initialized_from)
    optimizer = torch.optim.AdamW(
        learning, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps))
    state = RunState()
    if resume is not None:
        load_checkpoint(resume, model, optimizer, scheduler, state, config, train_pairs)

    for epoch in range(state.epoch, config.epochs):
        t0 = time.perf_counter()
        model.train()
        if freeze_norm:
            _freeze_norm_statistics(model)
        share = ranks.share(config.batch_size)
        stream = batches(sampler, config, epoch, state.step, steps, device, workers, layout, share)
        for step, batch in enumerate(stream, start=state.step):
            loss = _train_step(net, optimizer, batch, config, ranks)
            scheduler.step()
            state.loss_sum += loss
            state.loss_count += 1
            state.step = step + 1
            yield BatchEnd(epoch, step, steps, loss, scheduler.get_last_lr()[0])
            if ranks.any(stop.is_set()):
                stop.set()
                break
        stream.close()  # stops the workers now, not when garbage-collected
        if stop.is_set() and state.step < steps:
            state.epoch = epoch
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, scheduler, state, config, train_pairs)
                yield CheckpointSaved(str(checkpoint), state.epoch, state.step)
            break
        val_loss, val_dice = ranks.on_main(
            lambda: evaluate_crops(model, val_crops, config, device), size=2
        )
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
        if ranks.any(stop.is_set()):  # all ranks stop at the same epoch
            stop.set()
            break
    stopped = stop.is_set()
    ranks.unwrap(model)
    model.requires_grad_(True)  # a later fine-tune of this model may train every layer
    _restore_best(model, state)
    # -- after training: fit what Segment reads from the card to the best network ------------
    tuned = None
    tune = config.task == "instance" and config.tune_postprocessing and ranks.is_main
    parent_post = (getattr(model, "card", None) or {}).get("postprocessing")
    kept = None
    if tune and parent_post and not held_out:
        # chosen on the training images themselves, the settings would fit them, not new images
        kept = "kept from the model fine-tuned (no held-out validation images)"
    elif tune and parent_post and on_strips(val_pairs):
        # a strip is too few objects to choose among ~100 settings, and the held-back
        # comparison with the parent is made there: chosen there, it would favour the new model
        kept = "kept from the model fine-tuned (one image: the held-back strip judges it)"
    if kept is not None:
        log.info("post-processing %s", kept)
        tune = False
    if tune and state.best_state is not None:
        tuned = yield from tune_model_iter(model, val_crops, device)
        yield tuned
    size = working.card_entry(factors) if working is not None else None
    result = _finish(model, state, config, train_pairs, stopped, initialized_from, tuned, size)
    if kept is not None:
        result.model.card["postprocessing"] = {**parent_post, "chosen_by": kept}
    if config.task == "instance" and ranks.is_main:
        _fit_size_model(result.model, val_pairs, train_pairs, device)
    ranks.wait_for_main()
    return ranks.record(result)


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


#: the parameters of a U-Net that ``train_layers="decoder"`` keeps (name prefixes)
ENCODER_PREFIXES = ("encoders.", "bottleneck.")


def _learning_parameters(
    model: torch.nn.Module, train_layers: str, initialized_from: Any
) -> list[torch.nn.Parameter]:
    """The parameters the optimiser changes; the others get ``requires_grad=False``, so no
    gradient is computed through them (the backward pass stops at the decoder)."""
    if train_layers == "all":
        return list(model.parameters())
    if initialized_from is None:
        raise UserInputError(
            "train_layers='decoder' fine-tunes a model's decoder: give a model to start from "
            "(init=, --init), or use train_layers='all' for a new network"
        )
    learning = []
    for name, parameter in model.named_parameters():
        keep = name.startswith(ENCODER_PREFIXES)
        parameter.requires_grad_(not keep)
        if not keep:
            learning.append(parameter)
    return learning


def _freeze_norm_statistics(model: torch.nn.Module) -> None:
    """Put the batch norms of ``model`` in eval mode: they normalise with (and keep) their
    running statistics; their weights and biases still train."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


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


def _train_step(
    model: torch.nn.Module, optimizer, batch, config: TrainConfig, ranks: Ranks | None = None
) -> float:
    """One optimizer step; ``model`` may be a DDP wrapper (``ranks``: its process group)."""
    ranks = ranks or Ranks()
    image, target, weight, valid = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(image)
    loss = combined_loss(logits, target, weight, valid, config.dice_weight, ranks.total)
    if not torch.isfinite(loss.detach()):  # diverged: stop before the step spoils the weights
        raise UserInputError(
            f"training diverged: the loss became {float(loss.detach())} (learning rate "
            f"{config.learning_rate:g}), so no model was saved; train again with a learning "
            "rate 10 times lower (--lr, or the Train dock's learning rate)"
        )
    ranks.backward(loss)
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return float(loss.detach())


# -- the result ---------------------------------------------------------------------------
def _restore_best(model: UNet, state: RunState) -> None:
    """The best epoch's weights, in the default memory layout, in eval mode."""
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.to(memory_format=torch.contiguous_format)
    model.eval()


def _finish(
    model: UNet,
    state: RunState,
    config: TrainConfig,
    pairs,
    stopped: bool,
    initialized_from: dict[str, Any] | None = None,
    tuned: TunedPostprocessing | None = None,
    working_size: dict[str, Any] | None = None,
) -> TrainResult:
    model.card = training_card(model, state, config, pairs, initialized_from, tuned, working_size)
    return TrainResult(
        model, list(state.history), state.best_epoch, state.best_dice, stopped, tuned
    )


def _fit_size_model(model: UNet, val_pairs, train_pairs, device) -> None:
    """The card's ``size_model`` (object-size estimate), fitted on validation images first."""
    fit_pairs = [*val_pairs, *(p for p in train_pairs if all(p is not v for v in val_pairs))]
    parent = model.card.pop("size_model", None)  # a fine-tuned model's old one is refitted...
    keep = _same_working_size(parent, model.card.get("object_diameter"))
    annotated = sum(1 for p in fit_pairs if p.diameters.size)
    entry = None
    if not keep or annotated >= FEW_IMAGES:
        entry = fit_size_model(
            model, fit_pairs, object_diameter=model.card.get("object_diameter"), device=device
        )
    if entry is None and keep:
        # ...unless it has too few annotated images to fit one as well as its parent's was (a
        # fine-tune at the parent's working size keeps the parent's)
        log.warning(
            "size model: kept the parent model's (%d annotated image(s) here; refitted from %d)",
            annotated,
            FEW_IMAGES,
        )
        entry = {**parent, "kept_from_parent": True}
    if entry is not None:
        model.card["size_model"] = entry
    else:
        log.warning("no size model: segment measures this model's objects the older way")


#: a fine-tune refits its parent's size model from this many annotated images on
FEW_IMAGES = 3


def _same_working_size(entry: Any, object_diameter: Any) -> bool:
    """Whether a size-model card entry was fitted for this working object diameter."""
    try:
        return abs(float(entry["working_diameter"]) - float(object_diameter)) < 0.05
    except (KeyError, TypeError, ValueError):
        return False
