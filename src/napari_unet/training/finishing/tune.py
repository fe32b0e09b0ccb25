"""Instance post-processing chosen for each trained model on its validation images.

As StarDist's ``optimize_thresholds`` does, the end of every training run searches a small grid
of :func:`~napari_unet.inference.labels.postprocess.instance_labels` settings (seed threshold,
foreground threshold, seed split height, minimum object size) on the validation images and
keeps the row with the best mean AP (IoU 0.5:0.95, DSB 2018 sense). The settings go into the
model card's ``postprocessing`` entry, which Segment reads.

The network runs once per validation image; the seeds are made once per (seed threshold, split)
and the minimum sizes are applied to one watershed result. The default grid (4 x 3 x 4 x 2 = 96
rows) costs about 1 s of one CPU core per 256x256 validation crop (3 s for the 3 crops of a
32-image run); the search stops adding crops at :data:`MAX_PIXELS` (16 such crops).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ...common.errors import UserInputError
from ...common.progress import run_to_end
from ...evaluation.instances import average_precision
from ...inference.labels.postprocess import BACKGROUND, INTERIOR, LABEL_DTYPE, seed_mask

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GRID",
    "TuneProgress",
    "TunedPostprocessing",
    "search",
    "search_iter",
    "tune_model_iter",
]

#: the settings searched by default; each row is one combination
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "seed_threshold": (0.5, 0.6, 0.7, 0.8),
    "foreground_threshold": (0.4, 0.5, 0.6),
    "split": (0.0, 0.75, 1.0, 1.5),
    "min_size": (10, 20),
}
KEYS = ("seed_threshold", "foreground_threshold", "split", "min_size")
#: validation pixels (voxels) searched at most: the first crops up to this many, so the cost of
#: the search stays bounded for large validation sets
MAX_PIXELS = 2**20


@dataclass(frozen=True)
class TuneProgress:
    """``done`` of ``total`` seed settings (``seed_threshold`` x ``split``) scored."""

    done: int
    total: int


@dataclass(frozen=True)
class TunedPostprocessing:
    """The chosen post-processing and its validation scores.

    Attributes
    ----------
    settings : dict
        ``seed_threshold``, ``foreground_threshold``, ``split``, ``min_size``: keyword arguments
        of :func:`~napari_unet.inference.labels.postprocess.instance_labels`.
    ap50 : float
        Mean over the validation images of AP at IoU 0.5 with ``settings``.
    mean_ap : float
        Mean over the images of the AP averaged over IoU 0.50:0.05:0.95 (the criterion).
    n_images : int
    seconds : float
        Time the search took.
    table : list of dict
        Every row: the settings, ``ap50`` and ``mean_ap``.
    """

    settings: dict[str, Any]
    ap50: float
    mean_ap: float
    n_images: int
    seconds: float
    table: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def card_entry(self) -> dict[str, Any]:
        """The model card's ``postprocessing`` entry: the settings and how they were chosen."""
        return {
            **self.settings,
            "chosen_by": f"validation mean AP over {len(self.table)} settings",
            "n_images": self.n_images,
        }


def search_iter(
    probabilities: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    grid: Mapping[str, Sequence[float]] | None = None,
    *,
    regions: Sequence[np.ndarray | None] | None = None,
) -> Generator[TuneProgress, None, TunedPostprocessing]:
    """Score every row of ``grid`` on the images; yields progress, returns the best row.

    Parameters
    ----------
    probabilities : sequence of ndarray of shape (3, *spatial)
        Background / interior / boundary probabilities of each validation image.
    truths : sequence of ndarray of int, shape (*spatial)
        The images' instance labels (0 background).
    grid : mapping, optional
        Values to try for each of ``seed_threshold``, ``foreground_threshold``, ``split``,
        ``min_size``; a missing key takes :data:`DEFAULT_GRID`'s values.
    regions : sequence of bool ndarray or None, optional
        Where each annotation holds (objects mostly outside are ignored).

    Returns
    -------
    TunedPostprocessing
        The row with the highest mean AP (the first such row on ties).
    """
    grid = _check_grid(grid)
    if len(probabilities) != len(truths) or not truths:
        raise UserInputError(
            f"need one truth per probability map and at least one image, got "
            f"{len(probabilities)} and {len(truths)}"
        )
    regions = list(regions) if regions is not None else [None] * len(truths)
    regions = [None if r is None or np.all(r) else r for r in regions]
    t0 = time.perf_counter()
    pairs = list(itertools.product(grid["seed_threshold"], grid["split"]))
    table = []
    for done, (seed_t, split) in enumerate(pairs, start=1):
        # the seeds (the costly part) do not depend on the foreground threshold
        seeds = [ndi.label(seed_mask(p[INTERIOR], seed_t, split))[0] for p in probabilities]
        for fg_t in grid["foreground_threshold"]:
            scores = np.zeros((len(grid["min_size"]), len(truths), 2))
            for i, (probs, truth, region) in enumerate(zip(probabilities, truths, regions)):
                labels = _watershed(probs, seeds[i], fg_t)
                sizes = np.bincount(labels.ravel())
                for j, min_size in enumerate(grid["min_size"]):
                    kept = np.where(sizes[labels] >= min_size, labels, 0)
                    ap = average_precision(truth, kept, region=region)
                    scores[j, i] = ap.scores[0], ap.mean
            for j, min_size in enumerate(grid["min_size"]):
                ap50, mean_ap = scores[j].mean(axis=0)
                settings = {
                    "seed_threshold": float(seed_t),
                    "foreground_threshold": float(fg_t),
                    "split": float(split),
                    "min_size": int(min_size),
                }
                table.append({**settings, "ap50": float(ap50), "mean_ap": float(mean_ap)})
        yield TuneProgress(done, len(pairs))
    best = max(table, key=lambda row: row["mean_ap"])  # max keeps the first of equal rows
    result = TunedPostprocessing(
        {k: best[k] for k in KEYS},
        best["ap50"],
        best["mean_ap"],
        len(truths),
        time.perf_counter() - t0,
        table,
    )
    log.info(
        "post-processing %s: validation AP@0.5 %.3f, mean AP %.3f (%d settings, %.1f s)",
        result.settings,
        result.ap50,
        result.mean_ap,
        len(table),
        result.seconds,
    )
    return result


def search(
    probabilities: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    grid: Mapping[str, Sequence[float]] | None = None,
    *,
    regions: Sequence[np.ndarray | None] | None = None,
) -> TunedPostprocessing:
    """:func:`search_iter` run to its end."""
    return run_to_end(search_iter(probabilities, truths, grid, regions=regions))


def tune_model_iter(
    model: Any,
    crops: Sequence[Any],
    device: Any,
    grid: Mapping[str, Sequence[float]] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Generator[TuneProgress, None, TunedPostprocessing | None]:
    """Choose ``model``'s post-processing on validation crops; None without annotated objects.

    Parameters
    ----------
    model : UNet
        A trained 3-class instance model (eval mode).
    crops : sequence of TrainingPair
        Validation crops (:func:`~napari_unet.training.validation.validation_crops`) with
        instance ``labels``.
    device : torch.device
    grid : mapping, optional
        See :func:`search_iter`.
    max_pixels : int
        Search on the first crops holding at most this many pixels (at least one crop).
    """
    from ..validation import crop_probabilities

    chosen, pixels = [], 0
    for c in crops:
        if c.labels is None or not c.labels.any():
            continue
        if chosen and pixels + c.labels.size > max_pixels:
            break
        chosen.append(c)
        pixels += c.labels.size
    if not chosen:
        log.warning("no annotated object in the validation images: post-processing not tuned")
        return None
    t0 = time.perf_counter()
    probs = crop_probabilities(model, chosen, device)
    regions = [c.valid for c in chosen]
    result = yield from search_iter(probs, [c.labels for c in chosen], grid, regions=regions)
    return replace(result, seconds=time.perf_counter() - t0)


def _watershed(probabilities: np.ndarray, seeds: np.ndarray, foreground_threshold: float):
    """:func:`~napari_unet.inference.labels.postprocess.instance_labels` from labelled seeds, before
    the size filter (the same steps, for one in-memory image)."""
    from skimage.segmentation import watershed

    if not seeds.any():
        return np.zeros(seeds.shape, LABEL_DTYPE)
    probs = np.asarray(probabilities, dtype=np.float32)
    mask = (probs[BACKGROUND] < 1.0 - foreground_threshold) | (seeds > 0)
    return watershed(-probs[INTERIOR], seeds, mask=mask).astype(LABEL_DTYPE, copy=False)


def _check_grid(grid: Mapping[str, Sequence[float]] | None) -> dict[str, tuple]:
    grid = dict(grid or {})
    unknown = set(grid) - set(KEYS)
    if unknown:
        raise UserInputError(
            f"unknown post-processing settings in grid: {sorted(unknown)}; use {list(KEYS)}"
        )
    full = {k: tuple(grid.get(k, DEFAULT_GRID[k])) for k in KEYS}
    empty = [k for k, v in full.items() if not v]
    if empty:
        raise UserInputError(f"grid values for {empty} are empty; give at least one value each")
    return full
