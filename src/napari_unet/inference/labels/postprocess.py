"""Probabilities to labels, after stitching (never per tile).

Semantic labels are the most probable class per pixel. Instance labels come from a 3-class
model (0 background, 1 interior, 2 boundary) by seeded watershed:

1. seeds: connected components (face connectivity) of ``p_interior > seed_threshold``; with
   ``split > 0`` each component is split further at the peaks of its (lightly smoothed)
   distance transform that rise at least ``split`` pixels above the saddle between them, so
   touching nuclei whose interiors merge into one blob still get one seed each;
2. mask: the foreground, ``p_background < 1 - foreground_threshold``;
3. watershed of ``-p_interior`` from the seeds inside the mask, so each boundary pixel joins
   the nearest interior;
4. objects smaller than ``min_size`` pixels (voxels) are removed and the rest numbered
   ``1..N``.

The same code runs on one in-memory array or, chunk by chunk, on a zarr array larger than
memory: seeds are labelled per chunk and merged across chunk faces into global ids, the
watershed of each chunk sees a halo around it, and the object sizes are summed over chunks
before filtering. An object that crosses a chunk border therefore gets one label. The result
equals the in-memory result as long as every object's flooding fits in the halo (objects
smaller than about ``2 * halo`` pixels across). Two chunks are worked on at once, in threads
(:func:`in_order`); the result does not depend on it. A chunk's seeds (with ``split``) peak at
about 70 bytes per voxel (the h-maxima reconstruction of :mod:`.hmaxima`), its watershed at
about 30.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import tempfile
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ...common.cores import usable_cores
from ...common.errors import ShapeError
from .hmaxima import h_maxima_positive

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
LABEL_DTYPE = np.int32
#: name of the temporary seed stores of zarr outputs in the system's temporary folder
#: (then the process id)
SEEDS_PREFIX = "napari-unet-seeds-"
#: pixels of context around each chunk for the chunk-wise watershed
DEFAULT_HALO = 32
#: voxels whose distances to the background are summed at once (:func:`_distance_to_background`)
DISTANCE_SLAB = 1 << 20


@dataclass(frozen=True)
class ChunkProgress:
    """``done`` of ``total`` chunk steps of post-processing finished."""

    done: int
    total: int


def semantic_labels(probabilities: np.ndarray) -> np.ndarray:
    """The most probable class per pixel.

    Parameters
    ----------
    probabilities : ndarray of shape (K, *spatial)

    Returns
    -------
    ndarray of int32, shape spatial
    """
    probs = np.asarray(probabilities)
    if probs.ndim < 2:
        raise ShapeError(f"probabilities must have shape (K, ...), got {probs.shape}")
    return np.argmax(probs, axis=0).astype(LABEL_DTYPE)


def instance_labels(
    probabilities: np.ndarray,
    *,
    min_size: int = 10,
    seed_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    split: float = 0.0,
    sampling: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Instance labels from (background, interior, boundary) probabilities.

    Parameters
    ----------
    probabilities : ndarray of shape (3, *spatial)
        Class probabilities of a 3-class instance model, summing to 1 over axis 0.
    min_size : int
        Objects with fewer pixels (voxels) are removed.
    seed_threshold : float
        Interior probability above which a pixel seeds an object.
    foreground_threshold : float
        Foreground probability (``1 - p_background``) above which a pixel belongs to an object.
    split : float
        Split interior blobs at distance-transform peaks at least this many pixels high
        (``0``: one seed per blob). See :func:`seed_mask`.
    sampling : tuple of float, optional
        Pixel size per spatial axis relative to X, e.g. ``(3, 1, 1)`` for a stack whose z step
        is 3 times its pixel size; ``split`` is then measured in X pixels. Default: isotropic.

    Returns
    -------
    ndarray of int32, shape spatial
        0 background, ``1..N`` one id per object.
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    out = np.zeros(probs.shape[1:], LABEL_DTYPE)
    gen = instance_labels_chunked(
        probs,
        out,
        min_size=min_size,
        seed_threshold=seed_threshold,
        foreground_threshold=foreground_threshold,
        split=split,
        sampling=sampling,
    )
    for _ in gen:
        pass
    return out


def seed_mask(
    p_interior: np.ndarray,
    seed_threshold: float,
    split: float = 0.0,
    sampling: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Where watershed seeds lie: the confident interior, split at distance-transform peaks.

    Parameters
    ----------
    p_interior : ndarray of float, shape spatial
        Interior probability.
    seed_threshold : float
        The interior is ``p_interior > seed_threshold``.
    split : float
        ``0``: the interior itself (one seed per connected blob). ``> 0``: the h-maxima of
        height ``split`` (pixels) of the interior's Euclidean distance transform, smoothed
        with a Gaussian of sigma 1 px; two nuclei that merge through a neck narrower than
        their radii minus ``split`` get a seed each. Blobs without such a peak (objects only
        a few pixels across) keep the whole blob as their seed, so none is lost.
    sampling : tuple of float, optional
        Pixel size per axis (relative to X) for the distance transform and its smoothing.

    Returns
    -------
    ndarray of bool, shape spatial
    """
    interior = np.asarray(p_interior) > seed_threshold
    if not split or not interior.any():
        return interior
    sigma = 1.0 if sampling is None else tuple(1.0 / float(s) for s in sampling)
    dist = ndi.gaussian_filter(_distance_to_background(interior, sampling), sigma)
    # skimage's h_maxima, sorting only the objects' values: the same peaks, ~10x faster
    peaks = h_maxima_positive(dist, float(split)) & interior
    blobs, n = ndi.label(interior)
    has_peak = np.zeros(n + 1, bool)
    has_peak[np.unique(blobs[peaks])] = True
    return peaks | (interior & ~has_peak[blobs])


def _distance_to_background(mask: np.ndarray, sampling) -> np.ndarray:
    """``ndi.distance_transform_edt(mask, sampling=sampling)`` as float32, the same values.

    scipy's feature transform, with the distances summed slab by slab along the first axis
    (:data:`DISTANCE_SLAB` voxels at a time) where scipy makes them from whole-image offset
    arrays: for a 256x192x192 chunk the peak drops from about 60 to 20 bytes per voxel. The
    sums are scipy's: per axis ``((index - own index) * sampling) ** 2`` in float64, added in
    axis order, square root in float64; for unit pixels (``sampling=None``) they are exact
    integers (~0.08 s of ~0.34 s less for 2048x2048).
    """
    nearest = ndi.distance_transform_edt(
        mask, sampling=sampling, return_distances=False, return_indices=True
    )
    steps = None if sampling is None else [float(s) for s in np.broadcast_to(sampling, mask.ndim)]
    wide = np.int64 if mask.ndim * max(mask.shape, default=0) ** 2 >= 2**31 else np.int32
    out = np.empty(mask.shape, np.float32)
    rows = max(1, DISTANCE_SLAB // max(1, math.prod(mask.shape[1:])))
    for first in range(0, mask.shape[0], rows):
        slab = slice(first, min(first + rows, mask.shape[0]))
        squared = np.zeros(
            (slab.stop - slab.start, *mask.shape[1:]), wide if steps is None else np.float64
        )
        for axis, index in enumerate(nearest):
            # the voxels' own index on this axis
            here = np.arange(slab.start, slab.stop) if axis == 0 else np.arange(mask.shape[axis])
            here = here.astype(wide).reshape(-1, *(1,) * (mask.ndim - axis - 1))
            offset = index[slab].astype(wide) - here
            if steps is not None:
                offset = offset.astype(np.float64) * steps[axis]
            squared += offset * offset
        out[slab] = np.sqrt(squared, dtype=np.float64)
    return out


def semantic_labels_chunked(probabilities, out) -> Generator[ChunkProgress, None, None]:
    """Write :func:`semantic_labels` of ``probabilities`` (K, ...) into ``out`` chunk by chunk."""
    regions = chunk_regions(out.shape, _chunks_of(out))
    for i, region in enumerate(regions, start=1):
        out[region] = semantic_labels(np.asarray(probabilities[(slice(None), *region)]))
        yield ChunkProgress(i, len(regions))


def instance_labels_chunked(
    probabilities,
    out,
    *,
    min_size: int = 10,
    seed_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    split: float = 0.0,
    halo: int = DEFAULT_HALO,
    sampling: tuple[float, ...] | None = None,
) -> Generator[ChunkProgress, None, int]:
    """Instance labels of ``probabilities`` written into ``out``, chunk by chunk.

    Parameters
    ----------
    probabilities : array-like of shape (3, *spatial)
        numpy, zarr or dask; read one chunk (plus halo) at a time.
    out : ndarray or zarr.Array of shape spatial
        Receives the labels; its chunks set the work units (a numpy array is one chunk).
    min_size, seed_threshold, foreground_threshold, split, sampling
        As in :func:`instance_labels`.
    halo : int
        Context in pixels around each chunk for the seeds (with ``split``) and the watershed.

    Yields
    ------
    ChunkProgress
        After each chunk of each of the three passes.

    Returns
    -------
    int
        The number of objects.
    """
    _check_instance_probs(probabilities, out.shape)
    shape = tuple(out.shape)
    regions = chunk_regions(shape, _chunks_of(out))
    total = 3 * len(regions)
    with _scratch_like(out) as seeds:
        offset = 0
        seed_masks = in_order(
            lambda region: _seed_region(
                probabilities, region, shape, halo, seed_threshold, split, sampling
            ),
            regions,
        )
        for i, (region, found) in enumerate(zip(regions, seed_masks), start=1):
            lab, n = ndi.label(found)
            lab[lab > 0] += offset
            seeds[region] = lab
            offset += n
            yield ChunkProgress(i, total)
        mapping = _merge_across_faces(seeds, shape, _chunks_of(out), offset)
        counts = np.zeros(int(mapping.max()) + 1, np.int64)
        flooded = in_order(
            lambda region: _watershed_region(
                probabilities, seeds, mapping, region, shape, halo, foreground_threshold
            ),
            regions,
        )
        for i, (region, lab) in enumerate(zip(regions, flooded), start=len(regions) + 1):
            out[region] = lab
            counts += np.bincount(lab.ravel(), minlength=counts.size)[: counts.size]
            yield ChunkProgress(i, total)
    keep = counts >= max(int(min_size), 1)
    keep[0] = False
    final = np.zeros(counts.size, LABEL_DTYPE)
    final[keep] = np.arange(1, int(keep.sum()) + 1, dtype=LABEL_DTYPE)
    for i, region in enumerate(regions, start=2 * len(regions) + 1):
        out[region] = final[np.asarray(out[region])]
        yield ChunkProgress(i, total)
    return int(keep.sum())


#: chunks worked on at once (threads: the h-maxima and the watershed release the GIL and take
#: 1.8-1.9x less time on two cores); at most the cores this process may use
CHUNK_THREADS = 2


def in_order(func: Callable[[Any], Any], items: Sequence[Any], threads: int | None = None):
    """``func`` of each item, yielded in order, up to ``threads`` items in work at once.

    At most ``threads`` results are in memory ahead of the consumer. Closing the generator
    drops the items not yet started (the ones in work finish first).
    """
    threads = threads or min(CHUNK_THREADS, usable_cores())
    if threads <= 1 or len(items) <= 1:
        yield from map(func, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(threads, thread_name_prefix="napari-unet-chunks")
    pending: list = []
    try:
        pending += [pool.submit(func, item) for item in items[:threads]]
        for nxt in range(threads, len(items) + threads):
            done = pending.pop(0).result()
            if nxt < len(items):
                pending.append(pool.submit(func, items[nxt]))
            yield done
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


def _check_instance_probs(probabilities, spatial: Sequence[int]) -> None:
    if probabilities.shape[0] != 3 or tuple(probabilities.shape[1:]) != tuple(spatial):
        raise ShapeError(
            "instance labels need the probabilities of a 3-class model (background, interior, "
            f"boundary) of shape (3, {', '.join(map(str, spatial))}), got {tuple(probabilities.shape)}"
        )


def _with_halo(region, shape, halo):
    """The region grown by ``halo`` (clipped to ``shape``) and the region's place inside it."""
    outer = tuple(
        slice(max(r.start - halo, 0), min(r.stop + halo, n)) for r, n in zip(region, shape)
    )
    inner = tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, outer))
    return outer, inner


def _seed_region(probabilities, region, shape, halo, seed_threshold, split, sampling=None):
    """:func:`seed_mask` of one chunk; with ``split`` computed with ``halo`` pixels of context."""
    if not split:
        return np.asarray(probabilities[(INTERIOR, *region)]) > seed_threshold
    outer, inner = _with_halo(region, shape, halo)
    p_int = np.asarray(probabilities[(INTERIOR, *outer)], dtype=np.float32)
    return seed_mask(p_int, seed_threshold, split, sampling)[inner]


def _watershed_region(probabilities, seeds, mapping, region, shape, halo, foreground_threshold):
    """Watershed of one chunk with ``halo`` pixels of context, cropped back to the chunk."""
    from skimage.segmentation import watershed

    outer, inner = _with_halo(region, shape, halo)
    markers = mapping[np.asarray(seeds[outer])]
    if not markers.any():
        return np.zeros(tuple(r.stop - r.start for r in region), LABEL_DTYPE)
    # one channel at a time, and a copy of the core (not a view that keeps the whole
    # window's output alive): two chunks in work at once stay within one chunk's budget
    p_background = np.asarray(probabilities[(BACKGROUND, *outer)], dtype=np.float32)
    mask = (p_background < 1.0 - foreground_threshold) | (markers > 0)
    del p_background
    elevation = -np.asarray(probabilities[(INTERIOR, *outer)], dtype=np.float32)
    lab = watershed(elevation, markers, mask=mask)
    return np.array(lab[inner], dtype=LABEL_DTYPE)


def _merge_across_faces(seeds, shape, chunks, n_labels: int) -> np.ndarray:
    """Map per-chunk seed ids to global, consecutive ids (touching across faces = same id)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = []
    for axis, (size, step) in enumerate(zip(shape, chunks)):
        for edge in range(step, size, step):
            lo = [slice(None)] * len(shape)
            hi = [slice(None)] * len(shape)
            lo[axis], hi[axis] = edge - 1, edge
            a, b = np.asarray(seeds[tuple(lo)]).ravel(), np.asarray(seeds[tuple(hi)]).ravel()
            both = (a > 0) & (b > 0)
            pairs.append(np.stack([a[both], b[both]]))
    mapping = np.arange(n_labels + 1, dtype=LABEL_DTYPE)
    edges = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), np.int64)
    if edges.shape[1] == 0 or n_labels == 0:
        return mapping
    graph = coo_matrix(
        (np.ones(edges.shape[1], np.int8), (edges[0], edges[1])), shape=(n_labels + 1,) * 2
    )
    _, component = connected_components(graph, directed=False)
    # renumber components 1..M in order of their smallest member; label 0 stays 0
    first = {}
    for label, comp in enumerate(component[1:], start=1):
        first.setdefault(comp, len(first) + 1)
        mapping[label] = first[comp]
    return mapping


def chunk_regions(shape: Sequence[int], chunks: Sequence[int]) -> list[tuple[slice, ...]]:
    """The regions (tuples of slices) of a regular chunk grid over ``shape``."""
    ranges = [
        [slice(start, min(start + step, size)) for start in range(0, size, step)]
        for size, step in zip(shape, chunks)
    ]
    return list(itertools.product(*ranges))


def _chunks_of(array) -> tuple[int, ...]:
    chunks = getattr(array, "chunks", None)
    if isinstance(array, np.ndarray) or chunks is None:
        return tuple(max(int(s), 1) for s in array.shape)
    if chunks and isinstance(chunks[0], tuple):  # dask-style chunks
        return tuple(max(c[0], 1) for c in chunks)
    return tuple(int(c) for c in chunks)


@contextlib.contextmanager
def _scratch_like(out):
    """An int32 array shaped and chunked like ``out``: in memory for numpy, else a temp zarr."""
    if isinstance(out, np.ndarray):
        yield np.zeros(out.shape, LABEL_DTYPE)
        return
    import zarr

    # "<prefix><pid>-": a killed run's folder is found and removed by the next run (frames.py)
    with tempfile.TemporaryDirectory(prefix=f"{SEEDS_PREFIX}{os.getpid()}-") as tmp:
        yield zarr.open_array(
            tmp, mode="w", shape=out.shape, chunks=_chunks_of(out), dtype=LABEL_DTYPE
        )
