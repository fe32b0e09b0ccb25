"""One call from an image to labels: axes, normalisation, tiled inference, post-processing.

:func:`segment_iter` is the computation, written once as a generator that yields
:class:`SegmentProgress` events (at least one per batch of tiles) and returns the result; the
napari widget runs it in a thread worker (closing it cancels the run) and the CLI drives a
progress bar with it. :func:`segment` runs it to the end.

In-memory (numpy) images give numpy results. dask and zarr images give a dask array backed by
a zarr store that is written frame by frame and chunk by chunk, so memory stays bounded by the
tile and chunk sizes rather than by the image (see :mod:`.postprocess` for how objects that
cross chunk borders keep one label).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import axes as ax
from . import rescale
from .errors import ShapeError, UserInputError
from .normalize import check_finite, normalization_stats
from .postprocess import (
    LABEL_DTYPE,
    instance_labels,
    instance_labels_chunked,
    semantic_labels,
    semantic_labels_chunked,
)
from .progress import run_to_end

log = logging.getLogger(__name__)

OUTPUTS = ("instance", "semantic", "probabilities")
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
    """

    stage: str
    done: int
    total: int
    frame: int
    n_frames: int


def segment(
    image: Any,
    model: Any = None,
    *,
    axes: str | None = None,
    output: str | None = None,
    tile_shape: int | tuple[int, ...] | None = None,
    overlap: float | int | tuple[int, ...] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    min_size: int | None = None,
    out: str | os.PathLike | None = None,
    return_probabilities: bool = False,
    scale: float = 1.0,
    diameter: float | None = None,
    progress: bool | Callable[[SegmentProgress], None] | None = None,
):
    """Segment ``image`` with a U-Net: labels (or probabilities) in one call.

    Parameters
    ----------
    image : ndarray, dask array or zarr array
        Any axes (see ``axes``); uint8, uint16, int or float intensities.
    model : UNet, path-like, "nuclei" or None
        A model, a ``.safetensors`` model file, or ``None`` for the built-in nuclei model.
    axes : str, optional
        One letter per image axis from ``TCZYX``, e.g. ``"YX"``, ``"ZYX"``, ``"YXC"`` (RGB),
        ``"TCYX"``. Guessed from the shape and the model when omitted.
    output : {"instance", "semantic", "probabilities"}, optional
        Instance labels (3-class instance models), the most probable class per pixel, or
        the class probabilities. Default: the model's task.
    tile_shape, overlap, batch_size, device
        Passed to :func:`napari_unet.core.tiling.predict_tiled_iter` (``None`` = its defaults,
        which come from the model).
    min_size : int, optional
        Instance objects with fewer pixels (voxels) are removed. Default: the model card's
        ``postprocessing`` entry (thresholds chosen on validation data), else 10.
    out : path-like, optional
        For dask/zarr input: the zarr store (directory) to write the result into; a temporary
        directory when omitted. Ignored for numpy input.
    return_probabilities : bool
        Also return the probabilities: ``(labels, probabilities)``.
    scale : float
        Resample the spatial axes the model sees (YX, or ZYX for a 3D model) by this factor
        before segmenting, and the result back to the image's shape afterwards: use it for
        images at another magnification than the model was trained on (``0.5`` halves the
        size, for nuclei twice as large as the model expects). In-memory images only.
    diameter : float, optional
        Typical object diameter in pixels; sets ``scale`` to the model card's
        ``object_diameter`` divided by it (the built-in nuclei model expects about 20 px).
    progress : bool or callable, optional
        ``True`` shows a tqdm bar on stderr; a callable receives every :class:`SegmentProgress`.

    Returns
    -------
    labels : ndarray or dask array of int32, shape of ``image`` without its C axis
        (for ``output="probabilities"``: float32 of shape ``(K, *labels_shape)``)
    probabilities : ndarray or dask array of float32, shape ``(K, *labels_shape)``
        Only with ``return_probabilities=True``.

    Raises
    ------
    UserInputError
        Bad axes, a channel count the model does not take, NaN/inf in the image, an unknown
        output, or a model file that cannot be read (:class:`ModelFileError`).
    """
    gen = segment_iter(
        image,
        model,
        axes=axes,
        output=output,
        tile_shape=tile_shape,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        min_size=min_size,
        out=out,
        return_probabilities=return_probabilities,
        scale=scale,
        diameter=diameter,
    )
    return run_with_progress(gen, progress)


def run_with_progress(
    gen: Generator[SegmentProgress, None, Any],
    progress: bool | Callable[[SegmentProgress], None] | None = None,
):
    """Drive ``gen`` to the end, reporting its events; returns its return value."""
    if progress is True:
        return _run_with_tqdm(gen)
    return run_to_end(gen, progress if callable(progress) else None)


def _run_with_tqdm(gen, **tqdm_kwargs):
    """Drive ``gen`` with one tqdm bar on stderr that follows its stages."""
    from tqdm.auto import tqdm

    shown = None
    with tqdm(total=0, unit="step", **tqdm_kwargs) as bar:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if (event.stage, event.total) != shown:
                shown = (event.stage, event.total)
                bar.set_description(event.stage, refresh=False)
                bar.reset(total=event.total)
            bar.update(event.done - bar.n)


def segment_iter(
    image: Any,
    model: Any = None,
    *,
    axes: str | None = None,
    output: str | None = None,
    tile_shape: int | tuple[int, ...] | None = None,
    overlap: float | int | tuple[int, ...] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    min_size: int | None = None,
    out: str | os.PathLike | None = None,
    return_probabilities: bool = False,
    scale: float = 1.0,
    diameter: float | None = None,
) -> Generator[SegmentProgress, None, Any]:
    """:func:`segment` as a generator: yields :class:`SegmentProgress`, returns the result.

    Closing the generator (``gen.close()``, napari's ``worker.quit()``) stops the run at the
    next batch of tiles; nothing is returned then, and temporary files are removed.
    Parameters and result as in :func:`segment`.
    """
    from .model_io import resolve_model

    model = resolve_model(model)
    output = _check_output(output, model)
    array = as_array(image)
    axes = _resolve_axes(array, axes, model)
    canon, caxes = ax.to_canonical(array, axes)
    ax.check_model_fit(canon.shape, caxes, model.in_channels, model.ndim)
    lazy = _is_dask(canon)
    if not lazy:
        check_finite(canon)
    factors = rescale.factors(caxes, model.ndim, rescale.resolve_scale(scale, diameter, model))
    if any(f != 1.0 for f in factors):
        if lazy:
            raise UserInputError(
                "scale/diameter work on in-memory images; rescale a dask or zarr image first"
            )
        original = canon.shape
        canon = rescale.resample(canon, factors, order=1)
    post = postprocessing_settings(model, min_size)
    job = _Job(model, canon, caxes, output, post, return_probabilities)
    tiling = {
        "tile_shape": tile_shape,
        "overlap": overlap,
        "batch_size": batch_size,
        "device": device,
    }
    if lazy:
        result = yield from job.run_lazy(tiling, out)
    else:
        result = yield from job.run_in_memory(tiling)
    labels, probs = result
    if any(f != 1.0 for f in factors):
        labels, probs = rescale.restore(labels, probs, original, caxes, output)
    labels = ax.from_canonical(labels, caxes, axes, leading=1 if output == "probabilities" else 0)
    if not return_probabilities or output == "probabilities":
        return labels
    return labels, ax.from_canonical(probs, caxes, axes, leading=1)


def postprocessing_settings(model, min_size: int | None = None) -> dict[str, Any]:
    """Instance post-processing settings: the model card's, with ``min_size`` if given.

    The card's optional ``postprocessing`` entry holds ``seed_threshold``,
    ``foreground_threshold`` and ``min_size`` (see :func:`~.postprocess.instance_labels`).
    """
    known = ("seed_threshold", "foreground_threshold", "min_size")
    card = model.card.get("postprocessing") or {}
    post = {"min_size": 10, **{k: card[k] for k in known if k in card}}
    if min_size is not None:
        post["min_size"] = int(min_size)
    return post


def as_array(image: Any):
    """A numpy or dask array from numpy, dask, zarr or any array-like input."""
    if _is_dask(image):
        array = image
    elif _is_zarr(image):
        import dask.array as da

        array = da.from_zarr(image)
    else:
        array = np.asarray(image)
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8)
    if kind not in "uif":
        raise UserInputError(
            f"image must hold numbers (uint8, uint16, int or float), got dtype {array.dtype}"
        )
    if array.ndim < 2:
        raise ShapeError(f"image must have at least two axes (Y, X), got shape {array.shape}")
    return array


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.") and hasattr(array, "dask")


def _is_zarr(array: Any) -> bool:
    return type(array).__module__.startswith("zarr.") and hasattr(array, "chunks")


def _check_output(output: str | None, model) -> str:
    task = model.card.get("task") or ("instance" if model.num_classes == 3 else "semantic")
    output = task if output is None else output
    if output not in OUTPUTS:
        raise UserInputError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output == "instance" and (task != "instance" or model.num_classes != 3):
        raise UserInputError(
            f"output 'instance' needs an instance model (3 classes: background, interior, "
            f"boundary); this model's task is {task!r} with {model.num_classes} classes: "
            "use output='semantic'"
        )
    return output


def _resolve_axes(array, axes: str | None, model) -> str:
    if axes is not None:
        return ax.parse_axes(axes, array.ndim)
    guess = ax.guess_axes(array.shape, in_channels=model.in_channels, model_ndim=model.ndim)
    if array.ndim > 2:
        log.info("axes not given; guessed %s for shape %s", guess, array.shape)
    return guess


class _Job:
    """The frames of one image, normalised and segmented one after the other."""

    def __init__(self, model, canon, caxes: str, output: str, post: dict, keep_probs: bool):
        self.model, self.canon, self.caxes = model, canon, caxes
        self.output, self.post, self.keep_probs = output, post, keep_probs
        self.frames = ax.frame_indices(canon.shape, caxes, model.ndim)
        self.labels_shape = tuple(s for a, s in zip(caxes, canon.shape) if a != "C")
        self.n_classes = model.num_classes
        self._stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- normalisation -------------------------------------------------------------------
    def normalized_frame(self, index: tuple[int, ...]):
        """The frame at ``index`` as float32 ``(C, [Z,] Y, X)``, normalised per time point."""
        offset, scale = self._frame_stats(index)
        block = ax.frame(self.canon, self.caxes, index)
        shape = (-1,) + (1,) * (block.ndim - 1)
        if _is_dask(block):  # stays lazy: the tiling reads (and checks) it tile by tile
            return (block.astype(np.float32) - offset.reshape(shape)) / scale.reshape(shape)
        return (np.asarray(block, np.float32) - offset.reshape(shape)) / scale.reshape(shape)

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
    def run_in_memory(self, tiling: dict) -> Generator[SegmentProgress, None, tuple]:
        from .tiling import predict_tiled_iter

        n = len(self.frames)
        labels = (
            np.zeros(self.labels_shape, LABEL_DTYPE) if self.output != "probabilities" else None
        )
        probs = None
        for i, index in enumerate(self.frames):
            frame_probs = yield from _relay(
                predict_tiled_iter(self.model, self.normalized_frame(index), **tiling), i, n
            )
            if probs is None and (self.keep_probs or self.output == "probabilities"):
                probs = np.zeros((self.n_classes, *self.labels_shape), np.float32)
            if probs is not None:
                probs[(slice(None), *index)] = frame_probs
            if labels is not None:
                labels[index] = self._postprocess(frame_probs)
        return (probs if self.output == "probabilities" else labels), probs

    def _postprocess(self, probs: np.ndarray) -> np.ndarray:
        if self.output == "semantic":
            return semantic_labels(probs)
        return instance_labels(probs, **self.post)

    # -- dask / zarr -------------------------------------------------------------------------
    def run_lazy(self, tiling: dict, out) -> Generator[SegmentProgress, None, tuple]:
        """Tile by tile into zarr stores: probabilities (temporary), then labels (``out``)."""
        import dask.array as da

        from .tiling import predict_tiled_iter

        keep = self.keep_probs or self.output == "probabilities"
        root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="napari-unet-"))
        probs_dir = (
            root
            if self.output == "probabilities"
            else Path(tempfile.mkdtemp(prefix="napari-unet-probs-"))
        )
        try:
            probs_z, labels_z = self._open_stores(root, probs_dir)
            n = len(self.frames)
            for i, index in enumerate(self.frames):
                view = _FrameView(probs_z, index, leading=1)
                gen = predict_tiled_iter(
                    self.model, self.normalized_frame(index), out=view, **tiling
                )
                yield from _relay(gen, i, n)
                if labels_z is not None:
                    yield from self._postprocess_lazy(probs_z, labels_z, index, i, n)
        except BaseException:  # cancelled (GeneratorExit) or failed: leave no partial output
            shutil.rmtree(probs_dir, ignore_errors=True)
            if out is None:
                shutil.rmtree(root, ignore_errors=True)
            raise
        if not keep:
            shutil.rmtree(probs_dir, ignore_errors=True)
        probs = da.from_zarr(probs_z) if keep else None
        labels = da.from_zarr(labels_z) if labels_z is not None else probs
        return labels, probs

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
        for event in steps:
            yield SegmentProgress("postprocess", event.done, event.total, i, n)


def _relay(gen, frame: int, n_frames: int):
    """Forward the tiling events of one frame as :class:`SegmentProgress` over all frames.

    All frames have the same shape, hence the same number of tiles.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        total = event.total * n_frames
        try:
            yield SegmentProgress(
                "predict", frame * event.total + event.done, total, frame, n_frames
            )
        except GeneratorExit:
            gen.close()
            raise


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
        chunk = canon.chunks[axis][0] if _is_dask(canon) else canon.shape[axis]
        sizes.append(int(min(max(chunk, 256 if a != "Z" else chunk), canon.shape[axis])))
    return tuple(sizes)
