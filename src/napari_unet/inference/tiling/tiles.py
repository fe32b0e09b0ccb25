"""The pieces of tiled inference that the in-memory and the dask engines share.

Reading a tile window (reflect-padded past the image's edges), checking it, running a batch
through the network, and the argument checks of :func:`.predict.predict_tiled_iter` and
:func:`.predict_dask.predict_tiled_dask`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...common.errors import ShapeError, UserInputError
from ...model.inference import to_model_layout
from ...model.unet import UNet
from .tile_plan import TilePlan, default_batch_size

IntOrSeq = int | Sequence[int] | None


def forward_probabilities(net: UNet, x: np.ndarray, dev: torch.device) -> np.ndarray:
    """Probabilities ``(B, K, *out)`` float32 of a batch ``x`` of shape ``(B, C, *tile)``."""
    with torch.inference_mode():
        logits = net(to_model_layout(torch.from_numpy(x).to(dev), net))
        if logits.shape[1] == 1:
            probs = torch.sigmoid(logits)
        else:
            probs = torch.softmax(logits, dim=1)
        return probs.float().cpu().numpy()


def read_window(image: Any, window: Sequence[tuple[int, int]]) -> np.ndarray:
    """The pixels ``[lo, hi)`` per spatial axis of ``image`` (C, ...), as float32.

    Parts outside the image are reflected (``numpy.pad(mode="reflect")``, repeated for
    windows wider than the image). Only the needed part of a zarr or dask image is read.
    """
    spatial = image.shape[1:]
    index = [reflect_index(lo, hi, n) for (lo, hi), n in zip(window, spatial)]
    inside = all(lo >= 0 and hi <= n for (lo, hi), n in zip(window, spatial))
    if inside:
        block = image[(slice(None), *(slice(lo, hi) for lo, hi in window))]
        block = np.asarray(block)
    else:
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
        block = np.asarray(image[(slice(None), *box)])
        local = [i - s.start for i, s in zip(index, box)]
        block = block[np.ix_(np.arange(block.shape[0]), *local)]
    return check_tile(block.astype(np.float32, copy=False))


def check_tile(block: np.ndarray) -> np.ndarray:
    """``block``, after checking that it holds no NaN or inf."""
    if not np.isfinite(block).all():
        raise UserInputError(
            "the image contains NaN or infinite values; replace them (e.g. with "
            "numpy.nan_to_num) before predicting"
        )
    return block


def reflect_index(lo: int, hi: int, n: int) -> np.ndarray:
    i = np.arange(lo, hi)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i < n, i, period - i)


def check_model(model: Any) -> None:
    if not isinstance(model, UNet):
        raise UserInputError(
            f"model must be a napari_unet UNet (see napari_unet.load_model), got {type(model).__name__}"
        )


def check_image(model: UNet, image: Any) -> None:
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    if shape is None or dtype is None or not hasattr(image, "__getitem__"):
        raise UserInputError(
            f"image must be a numpy, dask or zarr array, got {type(image).__name__}"
        )
    axes = "(C, Y, X)" if model.ndim == 2 else "(C, Z, Y, X)"
    if len(shape) != model.ndim + 1:
        raise ShapeError(
            f"this {model.ndim}D U-Net needs a channel-first image {axes}, got shape "
            f"{tuple(shape)}; add a channel axis (image[None]) or pick the right model"
        )
    if shape[0] != model.in_channels:
        raise ShapeError(
            f"this U-Net takes {model.in_channels} channel(s) but the image {axes} has "
            f"{shape[0]} (shape {tuple(shape)}); is the channel axis first?"
        )
    if np.dtype(dtype).kind not in "biuf":
        raise UserInputError(f"image must hold real numbers, got dtype {dtype}")
    if math.prod(shape) == 0:
        raise ShapeError(f"image is empty (shape {tuple(shape)})")


def check_batch_size(batch_size: int | None, plan: TilePlan) -> int:
    if batch_size is None:
        return default_batch_size(plan)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise UserInputError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)
