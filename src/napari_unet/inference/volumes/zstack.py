"""Z stacks with a 2D model: 3D objects from planes (``z_mode``).

A 2D model sees one plane at a time. For a Z stack, :func:`..pipeline.segment_iter` turns its
planes into 3D objects in one of three ways (``z_mode``):

``"3d"``
    Predict the stack's planes in all three orientations, YX, ZX and ZY (the ZX and ZY planes
    with z resampled by the ``anisotropy``, z step / XY pixel size, so nuclei look round),
    average the class probabilities, and post-process the volume with the 3D seeded watershed
    of :mod:`..labels.postprocess` (distances measured in XY pixels). As Cellpose's ``do_3D``. Costs
    about ``1 + 2 * anisotropy`` times the plane-by-plane prediction.
``"stitch"``
    Instances per slice, linked from slice to slice: an object takes the id of the object of
    the previous slice it overlaps best when their IoU reaches ``stitch_threshold``, else a
    new id. As Cellpose's ``stitch_threshold``.
``"slices"``
    Instances per slice, with ids unique over the stack (no linking).

Time series: every time point is segmented on its own and keeps its own ids (an object does
not keep its id from one time point to the next: tracking is out of scope); a T+Z stack gets
3D objects per time point.

Memory: ``"stitch"`` and ``"slices"`` relabel slice by slice (the tables are in memory, the
labels of a dask / zarr image stay lazy). ``"3d"`` on an in-memory image holds one time
point's volume, its ``K``-class probabilities and labels in memory (about
``(C + K + 3) * Z * Y * X * 4`` bytes with the post-processing, plus one batch of resampled
planes); on a dask / zarr image (or with ``block=``) it runs block by block
(:mod:`.blockwise`), its memory bounded by one block and its halo.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Generator
from typing import Any

import numpy as np

from ...common.allocator import return_freed_memory
from ...common.device import resolve_device
from ...common.errors import Cancelled, UserInputError
from ...common.progress import relay
from ..backends.engines import engine_runner, resolve_engine
from ..frames import SegmentJob, SegmentProgress, is_dask
from ..images import axes as ax
from ..labels.postprocess import (
    LABEL_DTYPE,
    instance_labels,
    instance_labels_chunked,
    semantic_labels,
)
from ..sizing.rescale import resize
from ..tiling.predict import augmented
from ..tiling.tile_plan import BATCH_PIXELS, plan_tiles
from ..tiling.tiles import check_batch_size, read_window
from .zlink import DEFAULT_STITCH_THRESHOLD, link_slices, relabel_slices_iter

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_STITCH_THRESHOLD",
    "DEFAULT_Z_MODE",
    "Z_MODES",
    "average_orientations_iter",
    "instances_3d",
    "link_slices",
    "relabel_slices_iter",
    "resolve_z_mode",
    "run_3d",
]

Z_MODES = ("3d", "stitch", "slices")
#: the mode a 2D instance model uses on a Z stack when none is given
DEFAULT_Z_MODE = "3d"
#: ``"3d"`` volumes with more voxels are post-processed in YX chunks of CHUNK px
CHUNKED_VOXELS = 8 * 512 * 512
CHUNK = 128


#: the z step / XY pixel size of real stacks lies far inside these bounds (light sheet: ~1-10)
MIN_ANISOTROPY, MAX_ANISOTROPY = 0.01, 100.0
#: bytes per voxel of a time point that z_mode "3d" holds (probabilities, sums, labels)
BYTES_PER_VOXEL_3D = 25


def check_3d_memory(shape, caxes: str, anisotropy: float, scale: float) -> None:
    """Refuse, before any work, a ``"3d"`` run whose resampled time point cannot fit in memory.

    Parameters
    ----------
    shape : tuple of int
        The canonical image's shape (axes ``caxes``, with Z).
    anisotropy, scale : float
        The z resampling (anisotropy) and the XY scale of the run.
    """
    from ...common.device import available_memory

    voxels = 1.0
    for a, n in zip(caxes, shape):
        if a in "YX":
            voxels *= max(1.0, n * scale)
        elif a == "Z":
            voxels *= max(1.0, n * anisotropy * scale)
    need = voxels * BYTES_PER_VOXEL_3D
    free = available_memory()
    if free is not None and need > free:
        raise UserInputError(
            f"z_mode '3d' would resample each time point to {voxels:.3g} voxels (anisotropy "
            f"{anisotropy:g}, scale {scale:.3g}): about {need / 1e9:.1f} GB, and "
            f"{free / 1e9:.1f} GB are free; check the anisotropy (z step / XY pixel size), "
            "segment it block by block (--block Z Y X, block=(Z, Y, X)) or use --z-mode stitch "
            "(z_mode='stitch')"
        )


def resolve_z_mode(
    z_mode: str | None,
    caxes: str,
    model,
    output: str,
    anisotropy: float = 1.0,
    stitch_threshold: float = DEFAULT_STITCH_THRESHOLD,
    lazy: bool = False,
) -> str | None:
    """The z mode in effect, after checking the arguments; ``None`` when it does not apply.

    It applies to a 2D model on an image with a Z axis. ``None`` (default) means
    :data:`DEFAULT_Z_MODE` for instance output and ``"slices"`` (plane by plane) for semantic
    and probability output; ``"stitch"`` and ``"slices"`` only change instance labels. A
    dask / zarr image or a cluster run (``lazy``) gets ``"3d"`` too, run block by block
    (:mod:`.blockwise`: memory bounded by the block, one cluster task per block).

    Raises
    ------
    UserInputError
        An unknown mode, or a non-positive ``anisotropy`` or a ``stitch_threshold`` outside
        (0, 1].
    """
    if z_mode is not None and z_mode not in Z_MODES:
        raise UserInputError(f"z_mode must be one of {Z_MODES} or None, got {z_mode!r}")
    if not (
        isinstance(anisotropy, (int, float))
        and np.isfinite(anisotropy)
        and MIN_ANISOTROPY <= anisotropy <= MAX_ANISOTROPY
    ):
        raise UserInputError(
            f"anisotropy must be a number in [{MIN_ANISOTROPY}, {MAX_ANISOTROPY}] (z step / XY "
            f"pixel size, e.g. 3 for 0.6 um slices of 0.2 um pixels), got {anisotropy!r}"
        )
    if not (isinstance(stitch_threshold, (int, float)) and 0 < stitch_threshold <= 1):
        raise UserInputError(f"stitch_threshold must be an IoU in (0, 1], got {stitch_threshold!r}")
    if model.ndim != 2 or "Z" not in caxes:
        return None
    if z_mode is None:
        if output != "instance":
            return "slices"
        if lazy:
            log.info("dask/zarr Z stack: z_mode '3d' block by block (memory bounded by a block)")
        return DEFAULT_Z_MODE
    return z_mode


# -- "3d": three orientations ----------------------------------------------------------------
def run_3d(
    job: SegmentJob, tiling: dict, z_factor: float, out: str | os.PathLike | None = None
) -> Generator[SegmentProgress, None, tuple[Any, Any]]:
    """:meth:`SegmentJob.run_in_memory` for ``z_mode="3d"``: one volume per time point.

    Parameters
    ----------
    job : SegmentJob
        The job of a 2D model on an image with a Z axis (canonical axes, resampled in YX).
    tiling : dict
        ``tile_shape``, ``overlap``, ``batch_size``, ``device`` for each plane.
    z_factor : float
        How many XY pixels one z step spans in the image the model sees (the anisotropy
        times the YX resampling factor).
    out : path-like, optional
        For dask / zarr input: a zarr store to write the result into.

    Returns
    -------
    labels, probabilities
        As :meth:`SegmentJob.run_in_memory`: numpy arrays of the labels shape (``None``
        probabilities unless kept); for dask / zarr input, dask arrays (from ``out``).
    """
    lazy = is_dask(job.canon)
    if lazy:
        log.info(
            "z_mode='3d' loads one time point of this dask/zarr image %s into memory at a "
            "time; z_mode='stitch' keeps memory within tiles",
            tuple(job.canon.shape),
        )
    volumes = ax.frame_indices(job.canon.shape, job.caxes, 3)
    keep = job.keep_probs or job.output == "probabilities"
    probs = np.zeros((job.n_classes, *job.labels_shape), np.float32) if keep else None
    labels = None if job.output == "probabilities" else np.zeros(job.labels_shape, LABEL_DTYPE)
    for v, index in enumerate(volumes):
        volume = np.asarray(job.normalized_frame(index), np.float32)  # (C, Z, Y, X)
        avg = yield from average_orientations_iter(
            job.model, volume, z_factor, tiling, frame=v, n_frames=len(volumes)
        )
        if probs is not None:
            probs[(slice(None), *index)] = avg
        if labels is not None:
            yield SegmentProgress("postprocess", v, len(volumes), v, len(volumes))
            if job.output == "semantic":
                labels[index] = semantic_labels(avg)
            else:
                labels[index] = yield from _instances_3d(avg, job.post, z_factor, v, len(volumes))
    if labels is not None:
        yield SegmentProgress("postprocess", len(volumes), len(volumes), 0, len(volumes))
    result = probs if job.output == "probabilities" else labels
    if lazy:
        return _as_dask(result, out), (None if probs is None else _as_dask(probs, None))
    return result, probs


def _instances_3d(
    probs: np.ndarray, post: dict, z_factor: float, frame: int, n_frames: int
) -> Generator[SegmentProgress, None, np.ndarray]:
    """3D instance labels of ``probs`` (3, Z, Y, X); chunk by chunk in YX for large volumes.

    The whole-volume watershed peaks at about 175 bytes per voxel; above
    :data:`CHUNKED_VOXELS` the labels are made in YX chunks of :data:`CHUNK` px (all of Z)
    with :func:`..labels.postprocess.instance_labels_chunked` (objects crossing chunk borders keep
    one id), so the peak is that of one chunk and its halo.
    """
    sampling = (z_factor, 1.0, 1.0)
    if probs[0].size <= CHUNKED_VOXELS:
        return instance_labels(probs, **post, sampling=sampling)
    import zarr

    return_freed_memory()
    shape = probs.shape[1:]
    store = zarr.create_array(
        store=zarr.storage.MemoryStore(),
        shape=shape,
        chunks=(shape[0], min(CHUNK, shape[1]), min(CHUNK, shape[2])),
        dtype=LABEL_DTYPE,
        compressors=None,
    )
    steps = instance_labels_chunked(probs, store, **post, sampling=sampling)
    yield from relay(
        steps, lambda e: SegmentProgress("postprocess", e.done, e.total, frame, n_frames)
    )
    return np.asarray(store[...])


#: the 3D post-processing of one volume, for the blockwise path (:mod:`.blockwise`)
instances_3d = _instances_3d


def _as_dask(array: np.ndarray, out):
    """``array`` as a dask array, written to the zarr store ``out`` if given."""
    import dask.array as da

    if out is None:
        return da.from_array(array)
    import zarr

    store = zarr.open_array(str(out), mode="w", shape=array.shape, dtype=array.dtype)
    store[...] = array
    return da.from_zarr(store)


def average_orientations_iter(
    model, volume: np.ndarray, z_factor: float, tiling: dict, frame: int = 0, n_frames: int = 1
) -> Generator[SegmentProgress, None, np.ndarray]:
    """Class probabilities of a volume, averaged over its YX, ZX and ZY planes.

    Parameters
    ----------
    model : UNet
        A 2D model.
    volume : ndarray of float32, shape (C, Z, Y, X)
        The normalised volume.
    z_factor : float
        XY pixels per z step: the ZX and ZY planes are resampled to ``round(Z * z_factor)``
        rows for the model, and their probabilities back to ``Z`` rows (linearly).

    Yields
    ------
    SegmentProgress
        Stage ``"predict"``, one step per plane (``Z + Y + X`` in all).

    Returns
    -------
    ndarray of float32, shape (K, Z, Y, X)
    """
    _, nz, ny, nx = volume.shape
    total = nz + ny + nx
    acc = np.zeros((model.num_classes, nz, ny, nx), np.float32)
    seen_z = max(1, round(nz * z_factor))
    done = 0
    # YX planes at the stack's own z; ZX and ZY planes with z resampled for the model and
    # their probabilities resampled back
    for axis in (1, 2, 3):
        planes = np.moveaxis(volume, axis, 0)  # (N, C, a, b), a view
        rows = None if axis == 1 else seen_z
        for first, probs in _predict_planes_iter(model, planes, tiling, rows):
            np.moveaxis(acc, axis, 0)[first : first + len(probs)] += probs
            done += len(probs)
            yield SegmentProgress("predict", done, total, frame, n_frames)
    acc /= 3.0
    return acc


def _predict_planes_iter(
    model, planes: np.ndarray, tiling: dict, rows: int | None
) -> Generator[tuple[int, np.ndarray], None, None]:
    """Probabilities of equally shaped planes, their tiles batched across planes.

    Parameters
    ----------
    planes : ndarray of float32, shape (N, C, A, B)
    rows : int, optional
        Resample each plane to ``rows`` rows (linearly) for the model, and its probabilities
        back to ``A`` rows.

    Yields
    ------
    first, probabilities : int, ndarray of float32 of shape (n, K, A, B)
        Planes ``first .. first + n - 1``, one batch at a time.
    """
    n, _, a, b = planes.shape
    shape = (a if rows is None else rows, b)
    plan = plan_tiles(
        model, shape, tile_shape=tiling.get("tile_shape"), overlap=tiling.get("overlap")
    )
    tiles = list(plan.tiles())
    per_batch = tiling.get("batch_size") or max(
        1, min(16, BATCH_PIXELS[2] // math.prod(plan.tile_shape))
    )
    check_batch_size(per_batch, plan)
    step = max(1, per_batch // len(tiles))  # planes per batch
    dev = resolve_device(tiling.get("device", "auto"))
    engine = resolve_engine(tiling.get("engine"), model, dev, pixels=n * a * b)
    forward = engine_runner(model, engine, dev)
    if tiling.get("tta"):
        forward = augmented(forward, plan.tile_shape)
    stop = tiling.get("stop")
    for first in range(0, n, step):
        block = planes[first : first + step]
        if rows is not None:
            block = resize(block, (*block.shape[:2], rows, b), 1)
        out = np.zeros((len(block), model.num_classes, *shape), np.float32)
        jobs = [(i, t) for i in range(len(block)) for t in tiles]
        for start in range(0, len(jobs), per_batch):
            batch = jobs[start : start + per_batch]
            x = np.stack([read_window(block[i], t.input_window) for i, t in batch])
            probs = forward(x, stop) if stop is not None else forward(x)
            if probs is None:  # the stop event was set during the batch
                raise Cancelled("the prediction was cancelled")
            for (i, t), p in zip(batch, probs):
                _accumulate(out[i], p, plan.weight(t.index), t.output_window)
        if rows is not None:
            out = resize(out, (*out.shape[:2], a, b), 1)
        yield first, out


def _accumulate(out: np.ndarray, probs: np.ndarray, weight: np.ndarray, window) -> None:
    """Add ``probs * weight`` (the part inside the plane) to ``out`` (K, A, B)."""
    dst = (slice(None), *(slice(lo, hi) for lo, hi, _ in window))
    src = (slice(None), *(slice(lo - off, hi - off) for lo, hi, off in window))
    out[dst] += probs[src] * weight[src[1:]]
