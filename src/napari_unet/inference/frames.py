"""One segmentation job: the frames of an image, normalised, tiled and post-processed.

:func:`napari_unet.inference.pipeline.segment_iter` checks the inputs and builds a
:class:`SegmentJob`; the job runs the frames (time points, or Z slices for a 2D model) one after
the other, in memory for numpy input or chunk by chunk into zarr stores for dask / zarr input,
and reports :class:`SegmentProgress` over all frames.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..common.progress import relay
from .images import axes as ax
from .images.domain import Doubt
from .images.normalize import LIMIT, normalization_stats, working_dtype
from .labels.postprocess import (
    LABEL_DTYPE,
    SEEDS_PREFIX,
    instance_labels_chunked,
    semantic_labels_chunked,
)

#: names of the temporary zarr stores in the system's temporary folder (then the process id)
_TEMP_PREFIX = "napari-unet-"
_PROBS_PREFIX = "napari-unet-probs-"
_WORK_PREFIX = "napari-unet-work-"  # a cluster job's work folder (clusters/cluster_job.py)

#: pixels per channel used to estimate the normalisation of a large (dask) image
STATS_SAMPLE = 4_000_000


@dataclass(frozen=True)
class SegmentProgress:
    """Progress of :func:`segment_iter`.

    Attributes
    ----------
    stage : str
        ``"predict"`` (tiled inference) or ``"postprocess"`` (labels from probabilities).
    done, total : int
        Steps finished and steps in all for this stage, over all frames: tiles for
        ``"predict"``, frames or chunk steps for ``"postprocess"``.
    frame, n_frames : int
        The frame (time point or Z slice) being processed, 0-based, and the number of frames.
    scale : float
        The factor by which the image is resampled for the model (``1.0``: not resampled);
        chosen by the automatic object size (``diameter="auto"``) or given as ``scale`` /
        ``diameter``. ``1.0`` during the ``"measuring objects"`` stage.
    diameter : float or None
        The typical object diameter (pixels of the image) the automatic object size measured,
        or the one given as ``diameter``; ``None`` when neither (and during measuring).
    report : SegmentReport or None
        Only on the last event (stage ``"done"``): what the run decided and found
        (:class:`~.images.domain.SegmentReport`).
    table : dict of str to ndarray, or None
        Only on the last event of a run asked for it (``table=True``) that has one (instance
        labels of an in-memory image): one row per object (:func:`~.labels.objects.object_table`).
    """

    stage: str
    done: int
    total: int
    frame: int
    n_frames: int
    scale: float = 1.0
    diameter: float | None = None
    report: Any = None
    table: Any = None


def is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.") and hasattr(array, "dask")


def is_zarr(array: Any) -> bool:
    return type(array).__module__.startswith("zarr.") and hasattr(array, "chunks")


class SegmentJob:
    """The frames of one image, normalised and segmented one after the other."""

    def __init__(self, model, canon, caxes: str, output: str, post: dict, keep_probs: bool):
        self.model, self.canon, self.caxes = model, canon, caxes
        self.output, self.post, self.keep_probs = output, post, keep_probs
        self.frames = ax.frame_indices(canon.shape, caxes, model.ndim)
        self.labels_shape = tuple(s for a, s in zip(caxes, canon.shape) if a != "C")
        self.n_classes = model.num_classes
        self._stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.doubt = Doubt()  # how sure the network was, frame by frame (in memory)

    # -- normalisation -------------------------------------------------------------------
    def normalized_frame(self, index: tuple[int, ...]):
        """The frame at ``index`` as float32 ``(C, [Z,] Y, X)``, normalised per time point."""
        offset, scale = self._frame_stats(index)
        block = ax.frame(self.canon, self.caxes, index)
        shape = (-1,) + (1,) * (block.ndim - 1)
        wide = working_dtype(block.dtype)  # float64 for 64-bit data: no precision lost
        if is_dask(block):  # stays lazy: the tiling reads (and checks) it tile by tile
            out = (block.astype(wide) - offset.reshape(shape)) / scale.reshape(shape)
            return out.clip(-LIMIT, LIMIT).astype(np.float32)
        out = (np.asarray(block, wide) - offset.reshape(shape)) / scale.reshape(shape)
        return np.clip(out, -LIMIT, LIMIT).astype(np.float32, copy=False)

    def frame_normalization(self, index: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(offset, scale)`` per channel of the time point at ``index``."""
        return self._frame_stats(index)

    def _frame_stats(self, index: tuple[int, ...]):
        t = index[0] if "T" in self.caxes else 0
        if t not in self._stats:
            volume = self.canon[t] if "T" in self.caxes else self.canon
            has_c = "C" in self.caxes
            sample = _subsample(volume, skip=1 if has_c else 0)
            spec = self.model.card.get("normalization")
            self._stats[t] = normalization_stats(sample, spec, channel_axis=0 if has_c else None)
        return self._stats[t]

    # -- in memory -------------------------------------------------------------------------
    def run_in_memory(
        self,
        tiling: dict,
        known: np.ndarray | None = None,
        known_labels: np.ndarray | None = None,
    ) -> Generator[SegmentProgress, None, tuple]:
        """Predict and post-process every frame in memory.

        ``known``: the probabilities ``(K, *labels_shape)`` of the whole image when already
        computed with these tiling settings (by the automatic object-size pass); they are
        post-processed instead of predicted again. ``known_labels``: their instance labels
        ``labels_shape``, made with this job's post-processing settings; with them (and
        ``known``) an instance job post-processes nothing.
        """
        if known is None or self.output != "instance":
            known_labels = None
        n = len(self.frames)
        labels = (
            np.zeros(self.labels_shape, LABEL_DTYPE) if self.output != "probabilities" else None
        )
        probs = None
        for i, index in enumerate(self.frames):
            if known is not None:
                frame_probs = np.asarray(known[(slice(None), *index)], np.float32)
                yield SegmentProgress("predict", i + 1, n, i, n)
            else:
                frame_probs = yield from relay(
                    self._predict_frame(index, tiling), _frame_progress(i, n)
                )
            self.doubt.add(frame_probs)
            if probs is None and (self.keep_probs or self.output == "probabilities"):
                probs = np.zeros((self.n_classes, *self.labels_shape), np.float32)
            if probs is not None:
                probs[(slice(None), *index)] = frame_probs
            if labels is not None and known_labels is not None:
                labels[index] = known_labels[index]
                yield SegmentProgress("postprocess", 0, 1, i, n)
                yield SegmentProgress("postprocess", 1, 1, i, n)
            elif labels is not None:
                labels[index] = yield from self._postprocess_iter(frame_probs, i, n)
        return (probs if self.output == "probabilities" else labels), probs

    def _predict_frame(self, index: tuple[int, ...], tiling: dict, out=None):
        """The probabilities of one frame: tiled inference, or a zoo package's own run."""
        if hasattr(self.model, "predict_iter"):  # a BioImage.IO package (zoo.runner.ZooModel)
            raw = np.asarray(ax.frame(self.canon, self.caxes, index), np.float32)
            return self.model.predict_iter(raw, device=tiling.get("device", "auto"), out=out)
        from .tiling.predict import predict_tiled_iter

        return predict_tiled_iter(self.model, self.normalized_frame(index), out=out, **tiling)

    def _postprocess_iter(
        self, probs: np.ndarray, i: int, n: int
    ) -> Generator[SegmentProgress, None, np.ndarray]:
        """Labels of frame ``i`` of ``n`` from its probabilities ``(K, *spatial)``, counted.

        Yields ``"postprocess"`` events: ``0`` of the total first, then one per pass
        (instance labels: seeds, watershed, size filter; semantic labels: one).
        """
        labels = np.zeros(probs.shape[1:], LABEL_DTYPE)
        if self.output == "semantic":
            steps, total = semantic_labels_chunked(probs, labels), 1
        else:  # a numpy array is one chunk: three passes
            steps, total = instance_labels_chunked(probs, labels, **self.post), 3
        yield SegmentProgress("postprocess", 0, total, i, n)
        yield from relay(
            steps, lambda event: SegmentProgress("postprocess", event.done, event.total, i, n)
        )
        return labels

    # -- dask / zarr -------------------------------------------------------------------------
    def run_lazy(self, tiling: dict, out, finish=None) -> Generator[SegmentProgress, None, tuple]:
        """Tile by tile into zarr stores: probabilities (temporary), then labels (``out``).

        The stores are written as :func:`into_stores` says: under a temporary name, renamed
        to ``out`` only when complete. ``finish``: a generator function given the labels
        store, run before the rename (z-stack ids linked across slices): a run killed at any
        moment leaves no store under ``out``.
        """
        keep = self.keep_probs or self.output == "probabilities"

        def work(root: Path, probs_dir: Path):
            probs_z, labels_z = yield from self._run_lazy_into(tiling, root, probs_dir)
            if finish is not None and labels_z is not None:
                yield from finish(labels_z)
            return probs_z, labels_z

        separate = self.output != "probabilities"  # the probabilities are always computed
        probs_z, labels_z, probs_temp, labels_temp = yield from into_stores(
            out, work, output=self.output, separate_probs=separate
        )
        if not keep and probs_temp is not None:
            shutil.rmtree(probs_temp, ignore_errors=True)
        return lazy_results(probs_z, labels_z, keep, probs_temp, labels_temp)

    def _run_lazy_into(self, tiling: dict, root: Path, probs_dir: Path):
        probs_z, labels_z = self._open_stores(root, probs_dir)
        n = len(self.frames)
        for i, index in enumerate(self.frames):
            view = _FrameView(probs_z, index, leading=1)
            gen = self._predict_frame(index, tiling, out=view)
            yield from relay(gen, _frame_progress(i, n))
            if labels_z is not None:
                yield from self._postprocess_lazy(probs_z, labels_z, index, i, n)
        return probs_z, labels_z

    def _open_stores(self, root: Path, probs_dir: Path):
        import zarr

        spatial = _spatial_chunks(self.canon, self.caxes, self.model.ndim)
        chunks = (1,) * (len(self.labels_shape) - len(spatial)) + spatial
        probs_z = zarr.open_array(
            str(probs_dir),
            mode="w",
            shape=(self.n_classes, *self.labels_shape),
            chunks=(self.n_classes, *chunks),
            dtype="float32",
        )
        labels_z = None
        if self.output != "probabilities":
            labels_z = zarr.open_array(
                str(root), mode="w", shape=self.labels_shape, chunks=chunks, dtype=LABEL_DTYPE
            )
        return probs_z, labels_z

    def _postprocess_lazy(self, probs_z, labels_z, index, i: int, n: int):
        probs_view = _FrameView(probs_z, index, leading=1)
        labels_view = _FrameView(labels_z, index)
        if self.output == "semantic":
            steps = semantic_labels_chunked(probs_view, labels_view)
        else:
            steps = instance_labels_chunked(probs_view, labels_view, **self.post)
        yield from relay(
            steps, lambda event: SegmentProgress("postprocess", event.done, event.total, i, n)
        )


def into_stores(
    out, work, *, output: str, separate_probs: bool
) -> Generator[Any, None, tuple[Any, Any, Path | None, Path | None]]:
    """Run ``work(root, probs_dir)`` into zarr stores under temporary names; rename to ``out``.

    Parameters
    ----------
    out : path-like or None
        The final store: ``work`` writes under a hidden temporary name beside it, renamed into
        place only when complete (an existing ``out`` is replaced then). None: a temporary
        folder of the system's.
    work : callable
        ``work(root, probs_dir)``, a generator of progress events returning
        ``(probs_z, labels_z)``: the stores it opened at ``root`` (the result: the labels, or
        the probabilities for ``output="probabilities"``) and ``probs_dir``.
    output : str
        The job's output (``"probabilities"``: the result is the probabilities store).
    separate_probs : bool
        Give the probabilities a temporary folder of their own; else ``probs_dir`` is ``root``.

    Returns
    -------
    tuple
        ``(probs_z, labels_z, probs_temp, labels_temp)``: the stores (opened again read-only
        at ``out`` once renamed) and the folders that are temporary (None: not), as
        :func:`lazy_results` takes them.

    A failure, a cancellation (``GeneratorExit``) or an interrupt removes every temporary
    store; those of a killed earlier run are removed first.
    """
    from ..common.atomic import atomic_dir, remove_stale_temp_dirs, remove_stale_temporaries

    for prefix in (_TEMP_PREFIX, _PROBS_PREFIX, _WORK_PREFIX, SEEDS_PREFIX):
        remove_stale_temp_dirs(prefix)
    final = Path(out) if out is not None else None
    if final is not None:
        remove_stale_temporaries(final)
    pid = os.getpid()
    writing = atomic_dir(final) if final is not None else contextlib.nullcontext(None)
    root = probs_dir = None
    try:
        with writing as tmp:
            root = (
                tmp if tmp is not None else Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{pid}-"))
            )
            probs_dir = root
            if separate_probs:
                probs_dir = Path(tempfile.mkdtemp(prefix=f"{_PROBS_PREFIX}{pid}-"))
            probs_z, labels_z = yield from work(root, probs_dir)
    except BaseException:  # cancelled, interrupted or failed: no partial output
        if probs_dir is not None and probs_dir != root:
            shutil.rmtree(probs_dir, ignore_errors=True)
        if final is None and root is not None:
            shutil.rmtree(root, ignore_errors=True)
        raise
    if final is None:
        return probs_z, labels_z, probs_dir, root
    probs_z, labels_z = _reopen(final, probs_z, labels_z, output)
    return probs_z, labels_z, (probs_dir if probs_dir != root else None), None


def _reopen(final: Path, probs_z, labels_z, output: str):
    """The stores written under a temporary name, opened again at ``final`` (read-only)."""
    import zarr

    if output == "probabilities":
        return zarr.open_array(str(final), mode="r"), None
    return probs_z, zarr.open_array(str(final), mode="r")


def lazy_results(probs_z, labels_z, keep: bool, probs_temp: Path | None, labels_temp: Path | None):
    """``(labels, probabilities)`` as dask arrays over finished zarr stores.

    ``keep``: the probabilities are part of the result (else ``None`` is returned for them).
    Temporary stores (``probs_temp``, ``labels_temp``; ``None``: not temporary) live as long
    as the zarr arrays the results read from (a napari layer, a dask graph) and are removed
    once those are gone, or at exit.
    """
    import dask.array as da

    if keep and probs_temp is not None:
        weakref.finalize(probs_z, shutil.rmtree, str(probs_temp), True)
    if labels_z is not None and labels_temp is not None:
        weakref.finalize(labels_z, shutil.rmtree, str(labels_temp), True)
    probs = da.from_zarr(probs_z) if keep else None
    labels = da.from_zarr(labels_z) if labels_z is not None else probs
    return labels, probs


def _frame_progress(frame: int, n_frames: int):
    """Turn one frame's :class:`TileProgress` into :class:`SegmentProgress` over all frames.

    All frames have the same shape, hence the same number of tiles.
    """

    def translate(event) -> SegmentProgress:
        done = frame * event.total + event.done
        return SegmentProgress("predict", done, event.total * n_frames, frame, n_frames)

    return translate


class _FrameView:
    """One frame of a zarr array, with the shape/chunks/indexing the post-processing needs."""

    def __init__(self, array, index: tuple[int, ...], leading: int = 0):
        self.array, self.index, self.leading = array, index, leading
        skip = leading + len(index)
        self.shape = tuple(array.shape[:leading]) + tuple(array.shape[skip:])
        self.chunks = tuple(array.chunks[:leading]) + tuple(array.chunks[skip:])

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _key(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if key == (Ellipsis,):
            key = (slice(None),) * self.ndim
        return (*key[: self.leading], *self.index, *key[self.leading :])

    def __getitem__(self, key):
        return self.array[self._key(key)]

    def __setitem__(self, key, value) -> None:
        self.array[self._key(key)] = value


def _subsample(volume, skip: int):
    """At most about :data:`STATS_SAMPLE` pixels per channel of ``volume``, as numpy."""
    spatial = volume.shape[skip:]
    n = int(np.prod(spatial))
    if n <= STATS_SAMPLE:
        return np.asarray(volume)
    step = int(np.ceil((n / STATS_SAMPLE) ** (1 / len(spatial))))
    return np.asarray(volume[(slice(None),) * skip + (slice(None, None, step),) * len(spatial)])


def _spatial_chunks(canon, caxes: str, model_ndim: int) -> tuple[int, ...]:
    """Chunk sizes of the model's spatial axes: the input's, at least 256 px in Y and X."""
    names = "ZYX"[-model_ndim:] if model_ndim == 3 else "YX"
    sizes = []
    for a in names:
        axis = caxes.index(a)
        chunk = canon.chunks[axis][0] if is_dask(canon) else canon.shape[axis]
        sizes.append(int(min(max(chunk, 256 if a != "Z" else chunk), canon.shape[axis])))
    return tuple(sizes)
