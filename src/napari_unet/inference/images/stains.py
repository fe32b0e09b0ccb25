"""The colour of a stained slide as stain amounts: optical density and haematoxylin.

A stained slide (H&E and the like) is dark stain on white: the light a stain absorbs, the
optical density ``-log(I / white)``, is proportional to its amount, so nuclei become bright
objects on a dark background, as in fluorescence. The built-in ``nuclei-he`` model takes the
optical density of the three colour samples (:func:`optical_density`); an earlier recipe took
the haematoxylin channel of colour deconvolution (:func:`haematoxylin`, Ruifrok & Johnston
2001, through scikit-image). Both read the samples against the image's white level
(:func:`white_level`), so the same slide gives the same input saved as uint8, uint16 (8 to 16
bits) or float.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .normalize import strided_sample

__all__ = ["WHITE_LEVELS", "haematoxylin", "optical_density", "white_level"]

#: white levels of colour samples that are not uint8 (8, 10, 12, 14 and 16 bits): see white_level
WHITE_LEVELS = (255.0, 1023.0, 4095.0, 16383.0, 65535.0)


def haematoxylin(rgb: Any, channel_axis: int = 0, white: float | None = None) -> Any:
    """The haematoxylin channel of a stained colour image (colour deconvolution).

    Parameters
    ----------
    rgb : ndarray or dask array, with 3 (RGB) or 4 (RGBA) samples on ``channel_axis``
        uint8, uint16, other integer or float intensities.
    channel_axis : int
        The axis of the colour samples.
    white : float, optional
        The sample value of white; default :func:`white_level`. Samples are read as
        ``min(I / white, 1)``, so the same slide gives the same channel at any bit depth.

    Returns
    -------
    ndarray or dask array of float32, ``rgb``'s shape without ``channel_axis``
        Haematoxylin concentration (optical density; nuclei bright, background dark), from
        :func:`skimage.color.rgb2hed` (Ruifrok & Johnston stain vectors).
    """
    white = white_level(rgb, channel_axis) if white is None else float(white)
    da = sys.modules.get("dask.array")  # loaded already if rgb is a dask array
    if da is not None and isinstance(rgb, da.Array):  # block by block, all samples in each
        moved = da.moveaxis(rgb, channel_axis, -1)
        moved = moved.rechunk({moved.ndim - 1: -1})
        return moved.map_blocks(_hed0, white, drop_axis=moved.ndim - 1, dtype=np.float32)
    return _hed0(np.moveaxis(np.asarray(rgb), channel_axis, -1), white)


def white_level(rgb: Any, channel_axis: int = 0) -> float:
    """The sample value of white (no light absorbed) of a colour image, from its type and range.

    uint8 is read against 255. Floats whose brightest colour sample is at most 1 are read
    against 1. Anything else (uint16, other integers, floats over 1) against the smallest of
    :data:`WHITE_LEVELS` (8, 10, 12, 14 and 16 bits, as cameras record) that holds its
    brightest colour sample, or that sample above 16 bits: a 12-bit camera's slide saved as
    uint16 is read against 4095, an 8-bit slide saved as uint16 or float against 255.

    Parameters
    ----------
    rgb : ndarray or dask array, with 3 (RGB) or 4 (RGBA) samples on ``channel_axis``
        The image; the brightest sample of a subsample of at most :data:`~.normalize.SAMPLE` pixels
        decides (alpha left out).
    channel_axis : int
        The axis of the colour samples.
    """
    if rgb.dtype == np.uint8:
        return 255.0
    key = (slice(None),) * (channel_axis % rgb.ndim) + (slice(0, 3),)
    values = strided_sample(rgb[key], keep_axis=channel_axis % rgb.ndim).astype(np.float64)
    values = values[np.isfinite(values)]
    top = float(values.max()) if values.size else 0.0
    if rgb.dtype.kind == "f" and top <= 1.0:
        return 1.0
    return float(next((level for level in WHITE_LEVELS if top <= level), top))


def optical_density(rgb: Any, channel_axis: int = 0, white: float | None = None) -> Any:
    """Optical density ``-log((I' + 1) / 256)`` of the colour samples (alpha dropped).

    ``I' = min(255 I / white, 255)`` puts the samples on the uint8 grid the built-in H&E
    model learnt on, so a slide gives the same densities saved as uint8, uint16 or float.
    Stains absorb light: optical density is proportional to the amount of stain, so a stained
    slide becomes bright objects on a dark background in every channel.

    Parameters
    ----------
    rgb : ndarray or dask array with 3 or 4 samples on ``channel_axis``
        uint8, uint16, other integer or float intensities.
    channel_axis : int
        The colour axis; negative counts from the end (``-1`` for ``(Y, X, 3)``).
    white : float, optional
        The sample value of white; default :func:`white_level` (255 for uint8, 1 for floats
        in [0, 1], else the bit depth that holds the brightest sample).

    Returns
    -------
    ndarray or dask array of float32, 3 samples on ``channel_axis``
    """
    white = white_level(rgb, channel_axis) if white is None else float(white)
    key = (slice(None),) * (channel_axis % rgb.ndim) + (slice(0, 3),)  # -1: the last axis
    values = np.minimum(rgb[key].astype(np.float32) * np.float32(255.0 / white), 255.0)
    return -np.log((values + 1.0) / 256.0).astype(np.float32)


def _hed0(block: np.ndarray, white: float) -> np.ndarray:
    from skimage.color import rgb2hed

    rgb = np.clip(block[..., :3].astype(np.float32) / np.float32(white), 0.0, 1.0)
    return rgb2hed(rgb)[..., 0].astype(np.float32)
