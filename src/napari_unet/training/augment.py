"""Data augmentation applied consistently to an image patch and its targets.

Spatial transforms (flips, 90-degree rotations, zoom and the elastic deformation of the U-Net
paper) act on the image, the class targets, the weights and the region mask alike; intensity
transforms (scale, shift, gamma, noise) act on the image only. All randomness comes from the
``numpy.random.Generator`` passed in, so training is reproducible with a seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..common.errors import UserInputError
from ..common.validate import check_number


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply and how strongly."""

    flips: bool = True
    rot90: bool = True
    elastic: float = 0.5
    """Probability of the paper's elastic deformation (a coarse 3x3 grid of random
    displacements with standard deviation ``elastic_sigma`` px, smoothly interpolated)."""
    elastic_sigma: float = 6.0
    zoom: tuple[float, float] = (0.75, 1.33)
    """Range of random scale factors (log-uniform), applied with the elastic warp."""
    intensity: bool = True
    noise: float = 0.03
    stain: float = 0.0
    """Standard deviation of a random mixing of the channels, ``image' = (I + E) @ image`` with
    ``E ~ N(0, stain)`` per entry (multichannel input only): stains whose colours differ from
    one lab to the next (H&E optical density, Tellez et al. 2019). 0 turns it off."""
    blur: float = 0.0
    """Probability of a Gaussian blur of sigma 0.5-1.5 px (out-of-focus regions). 0: off."""

    def __post_init__(self) -> None:
        if len(self.zoom) != 2:
            raise UserInputError(f"zoom must be a range (low, high), got {self.zoom!r}")
        low, high = self.zoom
        for value in (low, high):
            check_number(value, "zoom", minimum=0, low_open=True)
        check_number(self.elastic_sigma, "elastic_sigma", minimum=0)
        check_number(self.noise, "noise", minimum=0)
        check_number(self.stain, "stain", minimum=0)
        check_number(self.blur, "blur", minimum=0, maximum=1)
        if not 0 < low <= high:
            raise UserInputError(
                f"zoom must be a range (low, high) with 0 < low <= high, got {self.zoom!r}"
            )
        if not 0 <= self.elastic <= 1:
            raise UserInputError(f"elastic is a probability in [0, 1], got {self.elastic!r}")

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(
            flips=False, rot90=False, elastic=0.0, zoom=(1.0, 1.0), intensity=False, noise=0.0
        )


def learnt_with(card: Mapping[str, Any]) -> dict[str, float]:
    """The stain mixing and blur strengths a model learnt with, from its card.

    A fine-tune keeps them: a model that learnt to ignore stain colours and focus would unlearn
    it otherwise (one corrected H&E slide: AP@0.5 on the other slides -0.073 without them,
    +0.004 with them; ``benchmarks/bench_correct_retrain.py``).

    Parameters
    ----------
    card : mapping
        A model card (``model.card``); its ``provenance.training.augment`` is read.

    Returns
    -------
    dict
        ``{"stain": float, "blur": float}``: 0 for what the card does not give, or gives in a
        form that is not a valid strength (a card from elsewhere).
    """
    try:
        learnt = card.get("provenance", {}).get("training", {}).get("augment") or {}
        found = {key: float(learnt.get(key, 0.0)) for key in ("stain", "blur")}
        AugmentConfig(**found)  # valid strengths only
    except (AttributeError, TypeError, ValueError, UserInputError):
        return {"stain": 0.0, "blur": 0.0}
    return found


def augment(
    image: np.ndarray,
    targets: list[np.ndarray],
    rng: np.random.Generator,
    config: AugmentConfig,
    orders: list[int],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Randomly augment one patch.

    Parameters
    ----------
    image : ndarray of float32, shape (C, *spatial)
        The normalised image patch.
    targets : list of ndarray, each of shape (*spatial)
        Maps that move with the image (class targets, weights, region mask).
    rng : numpy.random.Generator
    config : AugmentConfig
    orders : list of int
        Interpolation order per target: 0 for labels and masks, 1 for weights.

    Returns
    -------
    image, targets
        Same shapes as given.
    """
    ndim = image.ndim - 1
    plane = (ndim - 2 + 1, ndim - 1 + 1)  # the YX axes of the image array (C first)
    if config.flips:
        for axis in range(1, ndim + 1):
            if rng.random() < 0.5:
                image = np.flip(image, axis)
                targets = [np.flip(t, axis - 1) for t in targets]
    if config.rot90 and image.shape[plane[0]] == image.shape[plane[1]]:
        k = int(rng.integers(4))
        image = np.rot90(image, k, axes=plane)
        targets = [np.rot90(t, k, axes=(plane[0] - 1, plane[1] - 1)) for t in targets]
    zoom = (
        float(np.exp(rng.uniform(*np.log(config.zoom))))
        if config.zoom[0] != config.zoom[1]
        else 1.0
    )
    if rng.random() < config.elastic or zoom != 1.0:
        sigma = config.elastic_sigma if rng.random() < config.elastic else 0.0
        coords = _warp_coordinates(image.shape[1:], rng, sigma, zoom)
        image = np.stack([_sample(c, coords, 1, "reflect") for c in image])
        targets = [_sample(t, coords, o, "reflect") for t, o in zip(targets, orders)]
    if config.stain > 0 and image.shape[0] > 1:
        mix = np.eye(image.shape[0]) + rng.normal(0, config.stain, (image.shape[0],) * 2)
        image = np.tensordot(mix.astype(np.float32), image, axes=1)
    if config.blur > 0 and rng.random() < config.blur:
        sigma = (0,) + (float(rng.uniform(0.5, 1.5)),) * ndim
        image = ndi.gaussian_filter(image, sigma)
    if config.intensity:
        image = _intensity(image, rng, config.noise)
    return np.ascontiguousarray(image, dtype=np.float32), [np.ascontiguousarray(t) for t in targets]


def _warp_coordinates(
    shape: tuple[int, ...], rng: np.random.Generator, sigma: float, zoom: float
) -> np.ndarray:
    """Sampling coordinates: a zoom about the centre plus a smooth random displacement field."""
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    coords = []
    for axis, g in enumerate(grid):
        centre = (shape[axis] - 1) / 2
        c = (g - centre) / zoom + centre
        if sigma > 0:
            coarse = rng.normal(0, sigma, size=(3,) * len(shape)).astype(np.float32)
            factors = [n / 3 for n in shape]
            c = (
                c
                + ndi.zoom(coarse, factors, order=3, mode="nearest", grid_mode=True)[
                    tuple(slice(0, n) for n in shape)
                ]
            )
        coords.append(c)
    return np.stack(coords)


def _sample(array: np.ndarray, coords: np.ndarray, order: int, mode: str) -> np.ndarray:
    out = ndi.map_coordinates(array.astype(np.float32, copy=False), coords, order=order, mode=mode)
    return out.astype(array.dtype, copy=False) if order == 0 else out


def _intensity(image: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Random contrast (scale), brightness (shift), gamma and Gaussian noise.

    ``image`` is ``(C, *spatial)``. With several channels the contrast and brightness are drawn
    per channel: stains and fluorophores vary independently (a colour jitter for RGB input).
    """
    if image.shape[0] > 1:
        shape = (image.shape[0],) + (1,) * (image.ndim - 1)
        scale, shift = rng.uniform(0.7, 1.3, shape), rng.uniform(-0.15, 0.15, shape)
        image = (image * scale + shift).astype(np.float32)
    else:
        image = image * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15)
    if rng.random() < 0.3:
        gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5))))
        image = np.sign(image) * np.abs(image) ** gamma
    if noise > 0 and rng.random() < 0.5:
        image = image + rng.normal(0, rng.uniform(0, noise), size=image.shape).astype(np.float32)
    return image
