"""Training from arrays: :func:`train` checks (image, labels) arrays and runs the loop to its end."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..common.errors import UserInputError
from ..common.progress import run_to_end
from ..model.unet import UNet
from .config import FINE_TUNE_LR, TrainConfig, config_for_model
from .data.pairs import TrainingPair, prepare_pair
from .data.view import as_segment_sees, describe_views
from .events import BatchEnd, CheckpointSaved, EpochEnd, TrainResult
from .loop import train_iter

log = logging.getLogger(__name__)

__all__ = ["prepare_data", "segment_view", "train"]


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
        Images ``(*spatial)`` or with one channel axis, and their labels ``(*spatial)``. The
        network learns them as Segment will show it images (:func:`segment_view`): a grey
        image with a bright background inverted, a colour slide ``(Y, X, 3)`` as its optical
        density for a model that takes that (``nuclei-he``); the log says so.
    val_images, val_labels : sequences of ndarray, optional
        Validation data; by default a fraction of the pairs is held out.
    regions : sequence of bool ndarray or None, optional
        Where each label image is valid (sparse annotation).
    ignore_label : int, optional
        Label value of unannotated pixels.
    model : UNet, optional
        Fine-tune this network (its architecture and normalisation are kept) instead of
        training a new one. The learning rate is then :data:`~.config.FINE_TUNE_LR` (1e-4, a
        tenth of training from scratch, as ``train --init``) unless ``learning_rate`` is given:
        at 1e-3 a fine-tune forgets much of what the model knew.
    checkpoint, resume
        As in :func:`train_iter`.
    **config
        Fields of :class:`TrainConfig` (``epochs``, ``patch_size``, ``batch_size``, ``task``,
        ``depth``, ``base_filters``, ``learning_rate``, ``seed``, ...).

    Returns
    -------
    TrainResult
        ``result.model`` (its ``card`` is filled in) and ``result.history``.

    Examples
    --------
    >>> result = train([image], [labels], epochs=5, patch_size=64)  # doctest: +SKIP
    >>> save_model(result.model, "my_model.safetensors")  # doctest: +SKIP
    """
    if model is not None and "learning_rate" not in config:
        config["learning_rate"] = FINE_TUNE_LR
    cfg = TrainConfig(**config)
    images, views = segment_view(images, cfg, model)
    if views:
        log.info("training images %s", views)
    pairs = prepare_data(images, labels, cfg, regions=regions, ignore_label=ignore_label)
    val = None
    if val_images is not None:
        val_labels = [] if val_labels is None else val_labels
        val_images, _ = segment_view(val_images, cfg, model)
        val = prepare_data(val_images, val_labels, cfg, ignore_label=ignore_label)
    gen = train_iter(pairs, val, cfg, model=model, checkpoint=checkpoint, resume=resume)
    return run_to_end(gen, _log_epoch)


def segment_view(
    images: Sequence[np.ndarray], config: TrainConfig, model: Any = None
) -> tuple[list[np.ndarray], str]:
    """Training images as Segment will show them to the network of ``model`` (or a new one).

    A fine-tuned ``nuclei-he`` must learn the optical density of a colour slide, and any
    single-channel model a brightfield image inverted, since that is what Segment gives them
    (:func:`~.data.view.as_segment_sees`).

    Returns
    -------
    images : list of ndarray
    said : str
        What was done, for a status line (``""`` when nothing was).
    """
    if model is not None:
        config = config_for_model(config, model)
    card = getattr(model, "card", None) or {}
    seen, views = as_segment_sees(
        images,
        ndim=config.ndim,
        in_channels=getattr(model, "in_channels", None),
        colour_input=card.get("colour_input"),
    )
    return seen, describe_views(views)


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
