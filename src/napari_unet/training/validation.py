"""Validation during training: the held-out split, fixed centre crops, loss and Dice."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..common.errors import UserInputError
from ..model.unet import UNet
from .config import TrainConfig
from .data import TrainingPair
from .losses import combined_loss

log = logging.getLogger(__name__)


def can_split(pairs: list, fraction: float) -> bool:
    """Whether :func:`split_validation` holds images out (else it validates on the training
    data): at least 2 pairs and a positive ``fraction``."""
    return len(pairs) >= 2 and fraction > 0


def split_validation(pairs: list[TrainingPair], fraction: float, seed: int) -> tuple[list, list]:
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
