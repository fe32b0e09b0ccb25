"""Validation during training: the held-out split, fixed centre crops, loss and Dice."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..common.errors import UserInputError
from ..model.unet import UNet
from .config import TrainConfig
from .data.pairs import TrainingPair
from .losses import combined_loss

log = logging.getLogger(__name__)


#: with fewer images than this (one), a strip of each is held back instead of whole images;
#: from two images on, a whole image is held back: a fairer judge of new images than a strip
#: of an image whose rest was learnt
STRIPS_BELOW = 2
#: the name suffix of a held-back strip's pair
STRIP_SUFFIX = " (held-back strip)"
#: the narrowest strip (pixels) worth validating on, and the narrowest part left to train on
MIN_STRIP = 32


def strip_slices(
    spatial_shape: Sequence[int], hold_back: float
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Where to train and what to hold back in one image: the last ``hold_back`` of its
    longest side (Y or X), cut at a multiple of 16 pixels.

    Returns
    -------
    (train, held) : tuple of slice tuples over the spatial axes, or None
        None when either part would be narrower than :data:`MIN_STRIP`.
    """
    shape = tuple(int(n) for n in spatial_shape)
    axis = len(shape) - 1 if shape[-1] >= shape[-2] else len(shape) - 2
    n = shape[axis]
    cut = round(n * (1 - hold_back))
    cut -= cut % 16
    if hold_back <= 0 or cut < MIN_STRIP or n - cut < MIN_STRIP:
        return None
    train = [slice(None)] * len(shape)
    held = [slice(None)] * len(shape)
    train[axis], held[axis] = slice(0, cut), slice(cut, n)
    return tuple(train), tuple(held)


def crop_pair(pair: TrainingPair, where: tuple[slice, ...], suffix: str = "") -> TrainingPair:
    """``pair`` cropped to ``where`` (spatial slices); its object sizes are kept."""
    return TrainingPair(
        pair.image[(slice(None), *where)],
        pair.target[where],
        pair.weight[where],
        pair.valid[where],
        pair.name + suffix,
        diameters=pair.diameters,
        labels=None if pair.labels is None else pair.labels[where],
    )


def split_strips(
    pairs: Sequence[TrainingPair], hold_back: float
) -> tuple[list[TrainingPair], list[TrainingPair], list[tuple[slice, ...]]] | None:
    """Train on most of each image and validate on a strip of each (:func:`strip_slices`).

    For fewer than :data:`STRIPS_BELOW` images: a one-image fine-tune can then choose its
    post-processing, and be compared with its parent, on pixels it did not learn from.

    Returns
    -------
    (train, held, held_slices) or None
        None for :data:`STRIPS_BELOW` images or more, ``hold_back`` 0, an image too small
        to cut, or a part without an annotated object.
    """
    if not 0 < len(pairs) < STRIPS_BELOW or hold_back <= 0:
        return None
    train, held, where = [], [], []
    for p in pairs:
        cut = strip_slices(p.spatial_shape, hold_back)
        if cut is None:
            return None
        parts = crop_pair(p, cut[0]), crop_pair(p, cut[1], STRIP_SUFFIX)
        if not all(_has_object(part) for part in parts):
            return None
        train.append(parts[0])
        held.append(parts[1])
        where.append(cut[1])
    return train, held, where


def on_strips(pairs: Sequence[TrainingPair]) -> bool:
    """Whether ``pairs`` are held-back strips (:func:`split_strips`)."""
    return bool(pairs) and all(p.name.endswith(STRIP_SUFFIX) for p in pairs)


def _has_object(pair: TrainingPair) -> bool:
    return bool(np.any((pair.target > 0) & pair.valid))


def can_split(pairs: list, fraction: float) -> bool:
    """Whether :func:`split_validation` holds images out (else it validates on the training
    data): at least 2 pairs and a positive ``fraction``."""
    return len(pairs) >= 2 and fraction > 0


def split_validation(
    pairs: list[TrainingPair], fraction: float, seed: int, hold_back: float = 0.0
) -> tuple[list, list]:
    """Training and validation pairs: ``fraction`` of the images held back, or, for fewer
    than :data:`STRIPS_BELOW` images and a positive ``hold_back``, a strip of each
    (:func:`split_strips`); the training pairs themselves (the same list) when neither can
    be done."""
    strips = split_strips(pairs, hold_back)
    if strips is not None:
        log.info("validating on held-back strips (the last %.0f%% of each image)", 100 * hold_back)
        return strips[0], strips[1]
    if not can_split(pairs, fraction):
        log.warning("no separate validation data: validating on the training data")
        return pairs, pairs
    n_val = min(max(1, round(fraction * len(pairs))), len(pairs) - 1)
    order = np.random.default_rng(seed + 1).permutation(len(pairs))
    val = {int(i) for i in order[:n_val]}
    return [p for i, p in enumerate(pairs) if i not in val], [
        p for i, p in enumerate(pairs) if i in val
    ]


def validation_crops(pairs: list[TrainingPair], model: UNet, max_size: int) -> list[TrainingPair]:
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
                p.image[(slice(None), *sl)],
                p.target[sl],
                p.weight[sl],
                p.valid[sl],
                p.name,
                labels=None if p.labels is None else p.labels[sl],
            )
        )
    if not crops:
        raise UserInputError(
            "every validation image is smaller than the smallest size the network takes"
        )
    return crops


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


def crop_probabilities(
    model: UNet, crops: Sequence[TrainingPair], device: torch.device
) -> list[np.ndarray]:
    """Class probabilities ``(K, *spatial)`` (float32) of ``model`` on each validation crop."""
    model.eval()
    out = []
    with torch.inference_mode():
        for c in crops:
            x = torch.from_numpy(np.ascontiguousarray(c.image[None])).to(device)
            out.append(torch.softmax(model(x), dim=1)[0].float().cpu().numpy())
    return out
