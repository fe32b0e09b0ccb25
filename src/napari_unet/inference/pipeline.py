"""One call from an image to labels: axes, normalisation, tiled inference, post-processing.

:func:`segment_iter` is the computation, written once as a generator that yields
:class:`SegmentProgress` events (at least one per batch of tiles) and returns the result; the
napari widget runs it in a thread worker (closing it cancels the run) and the CLI drives a
progress bar with it. :func:`segment` runs it to the end.

In-memory (numpy) images give numpy results. dask and zarr images give a dask array backed by
a zarr store that is written frame by frame and chunk by chunk, so memory stays bounded by the
tile and chunk sizes rather than by the image (see :mod:`.labels.postprocess` for how objects that
cross chunk borders keep one label).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..common.device import resolve_device
from ..common.errors import UserInputError
from ..common.progress import relay, run_with_progress
from ..common.validate import channels_look_like_labels, looks_like_labels
from ..zoo.resolve import resolve_model
from .backends.engines import engine_runner, resolve_engine
from .clusters import cluster
from .frames import SegmentJob, SegmentProgress, is_dask
from .images import axes as ax
from .images.domain import SegmentReport, check_domain, has_structure
from .images.modality import InputChoice, is_stained, median_position, prepare_input
from .images.normalize import check_finite
from .inputs import (
    OUTPUTS,
    as_array,
    check_numbers,
    check_output,
    postprocessing_settings,
    resolve_axes,
)
from .sizing import rescale
from .sizing.size import SizeEstimate
from .sizing.size_search import estimate_size_iter
from .volumes import zstack

__all__ = [
    "OUTPUTS",
    "SegmentProgress",
    "model_input",
    "postprocessing_settings",
    "run_with_progress",
    "segment",
    "segment_iter",
]

log = logging.getLogger(__name__)

#: the run's warnings about its input (also in its report: the CLI line carries them instead)
REPORT_LOG = logging.getLogger("napari_unet.report")

#: the built-in model for stained colour (H&E) images
STAINED_MODEL = "nuclei-he"
#: ``table=True`` keeps the probabilities (3 float32 per pixel) in memory up to this many pixels
#: (voxels) of labels (~400 MB of probabilities); larger images get no table
MAX_TABLE_PIXELS = 1 << 25


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
    diameter: float | str | None = "auto",
    z_mode: str | None = None,
    anisotropy: float = 1.0,
    stitch_threshold: float = zstack.DEFAULT_STITCH_THRESHOLD,
    block: tuple[int, int, int] | None = None,
    progress: bool | Callable[[SegmentProgress], None] | None = None,
    client: Any = None,
    engine: str = "auto",
    channel: int | str | None = None,
    channel_names: Sequence[str] | None = None,
    invert: str | bool = "auto",
    tta: bool = False,
    postprocessing: dict[str, float] | None = None,
    table: bool = False,
):
    """Segment ``image`` with a U-Net: labels (or probabilities) in one call.

    Parameters
    ----------
    image : ndarray, dask array or zarr array
        Any axes (see ``axes``); uint8, uint16, int or float intensities.
    model : UNet, path-like, "nuclei", "nuclei-he" or None
        A model, a ``.safetensors`` model file, a BioImage.IO package (``.zip`` or folder with
        ``rdf.yaml``, run with its own pre/post-processing; see :mod:`napari_unet.zoo`), or
        ``None`` for the built-in model of the image's kind: ``"nuclei-he"`` (trained on the
        optical density of H&E slides) for a stained colour image, ``"nuclei"``
        (fluorescence) for everything else.
    axes : str, optional
        One letter per image axis from ``TCZYX``, e.g. ``"YX"``, ``"ZYX"``, ``"YXC"`` (RGB),
        ``"TCYX"``. Guessed from the shape and the model when omitted.
    output : {"instance", "semantic", "probabilities"}, optional
        Instance labels (3-class instance models), the most probable class per pixel, or
        the class probabilities. Default: the model's task.
    tile_shape, overlap, batch_size, device
        Passed to :func:`napari_unet.inference.tiling.predict.predict_tiled_iter` (``None`` = its
        defaults, which come from the model).
    min_size : int, optional
        Instance objects with fewer pixels (voxels) are removed. Default: the model card's
        ``postprocessing`` entry (thresholds chosen on validation data), else 10.
    out : path-like, optional
        For dask/zarr input: the zarr store (directory) to write the result into; a temporary
        directory when omitted. Ignored for numpy input.
    return_probabilities : bool
        Also return the probabilities: ``(labels, probabilities)``.
    table : bool
        Also return a per-object table (:func:`~.labels.objects.object_table`: label, area,
        centroid, mean intensity of the image the model saw, the model's confidence), last in
        the result: ``(labels, table)`` or ``(labels, probabilities, table)``. Instance labels
        of in-memory images only (computed in this process): ``None`` for semantic output,
        dask / zarr images, clusters and images above :data:`MAX_TABLE_PIXELS`.
    scale : float
        Resample the spatial axes the model sees (YX, or ZYX for a 3D model) by this factor
        before segmenting, and the result back to the image's shape afterwards: use it for
        images at another magnification than the model was trained on (``0.5`` halves the
        size, for nuclei twice as large as the model expects). In-memory images only.
    diameter : float, "auto" or None
        Typical object diameter in pixels; sets ``scale`` to the model card's
        ``object_diameter`` divided by it (the built-in nuclei model expects about 20 px).
        ``"auto"`` (default): measure the objects first and resample the image so they
        come to the model's working size. Models with a fitted ``size_model`` in their card
        (every model trained since it exists) look at the image shrunk
        4x first and finer only while the objects look small (:mod:`.sizing.size_search`); older
        models measure at the image's own scale and resample only if the objects lie
        outside their ``object_diameter`` times their zoom augmentation range
        (:mod:`.sizing.size`). The measured diameter and the scale used are in the progress
        events. An explicit ``scale`` other than 1 wins over "auto". Models whose card has
        no ``object_diameter`` are not resampled. ``None``: no resampling beyond ``scale``.
    z_mode : {"3d", "stitch", "slices"} or None
        How a 2D model segments a Z stack (see :mod:`.volumes.zstack`): ``"3d"`` averages the
        predictions of the YX, ZX and ZY planes and builds 3D objects; ``"stitch"`` links
        per-slice objects across z by IoU; ``"slices"`` keeps per-slice objects, with ids
        unique over the stack. Default (``None``): ``"3d"`` for instance output (dask / zarr
        images and clusters block by block, see ``block``), plane by plane otherwise. Time
        points always keep their own ids (no tracking).
    anisotropy : float
        Z step / XY pixel size of a Z stack (e.g. 3 for 0.6 um slices of 0.2 um pixels);
        ``z_mode="3d"`` resamples z by it.
    stitch_threshold : float
        ``z_mode="stitch"``: the smallest IoU that links objects of neighbouring slices.
    block : (Z, Y, X), optional
        ``z_mode="3d"`` block by block (:mod:`.volumes.blockwise`), as dask / zarr images and
        cluster runs always are (one task per block on a cluster): each block of this many
        voxels is segmented with a halo of at least the network's receptive field and twice
        the object size, and objects crossing block faces are joined, so memory is bounded
        by the block (and the labels equal the in-memory run's). Default: in-memory images
        whole; dask / zarr images in blocks sized from their chunks and the free memory.
    progress : bool or callable, optional
        ``True`` shows a tqdm bar on stderr; a callable receives every :class:`SegmentProgress`.
    client : distributed.Client or str, optional
        Compute on this dask.distributed cluster (a client, or a scheduler address such as
        ``"tcp://host:8786"``) instead of in this process; see :mod:`.clusters.cluster_job`. ``out``
        must then be on storage every worker reaches (a temporary folder when omitted, which
        suits workers on this machine only). Same result as in-process.
    channel : int, str or None
        The channel a single-channel model takes from a multichannel image: a 0-based index
        on the C axis, or a name from ``channel_names``. Default: a channel named for a nuclear
        stain (DAPI, Hoechst, ...); a multichannel image without one is refused with its list
        of channels. Colour (RGB) images need none (see :mod:`.images.modality`).
    channel_names : sequence of str, optional
        The names of the channels (from the file's metadata), for ``channel`` and messages.
    invert : {"auto", "yes", "no"} or bool
        Invert the image for the model: for dark nuclei on a bright background (brightfield).
        ``"auto"`` (default) inverts when the background is brighter than the objects.
    tta : bool
        Test-time augmentation: average the probabilities over flips and 90-degree rotations
        of each tile (8 forward passes per tile; :func:`~.tiling.predict.predict_tiled_iter`). The
        object-size measurement runs without it. In-process only.
    postprocessing : dict, optional
        Instance post-processing settings that override the model card's:
        ``seed_threshold`` and ``foreground_threshold`` in (0, 1), ``split`` >= 0 (pixels),
        ``min_size`` >= 0 (see :func:`~.labels.postprocess.instance_labels`).
    engine : {"auto", "torch", "openvino", "onnxruntime"}
        What runs the network (:mod:`.backends.engines`). ``"auto"``: the fastest installed engine
        verified for the model, on the CPU, for images of at least 1 MPix (or models already
        exported); torch otherwise. The first use of a model with a faster engine exports it
        to the cache folder (a ``"preparing <engine>"`` stage, a few seconds, once per model).

    Returns
    -------
    labels : ndarray or dask array of int32, shape of ``image`` without its C axis
        (for ``output="probabilities"``: float32 of shape ``(K, *labels_shape)``)
    probabilities : ndarray or dask array of float32, shape ``(K, *labels_shape)``
        Only with ``return_probabilities=True``.
    table : dict of str to ndarray of shape (N,), or None
        Only with ``table=True``: one row per object.

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
        client=client,
        engine=engine,
        z_mode=z_mode,
        anisotropy=anisotropy,
        stitch_threshold=stitch_threshold,
        block=block,
        channel=channel,
        channel_names=channel_names,
        invert=invert,
        table=table,
        tta=tta,
        postprocessing=postprocessing,
    )
    if not table:
        return run_with_progress(gen, progress)
    last: list[SegmentProgress] = []

    def keep(event: SegmentProgress) -> SegmentProgress:
        last[:] = [event]
        return event

    result = run_with_progress(relay(gen, keep), progress)
    found = last[0].table if last else None  # the "done" event's
    return (*result, found) if isinstance(result, tuple) else (result, found)


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
    diameter: float | str | None = "auto",
    client: Any = None,
    engine: str = "auto",
    channel: int | str | None = None,
    channel_names: Sequence[str] | None = None,
    invert: str | bool = "auto",
    tta: bool = False,
    postprocessing: dict[str, float] | None = None,
    z_mode: str | None = None,
    anisotropy: float = 1.0,
    stitch_threshold: float = zstack.DEFAULT_STITCH_THRESHOLD,
    block: tuple[int, int, int] | None = None,
    stop: threading.Event | None = None,
    axes_source: str | None = None,
    table: bool = False,
) -> Generator[SegmentProgress, None, Any]:
    """:func:`segment` as a generator: yields :class:`SegmentProgress`, returns the result.

    Closing the generator (``gen.close()``, napari's ``worker.quit()``) stops the run at the
    next batch of tiles; nothing is returned then, and temporary files are removed.
    Parameters and result as in :func:`segment`, and:

    stop : threading.Event, optional
        Set it from another thread (with closing the generator) to stop at once, inside the
        batch of tiles in flight (:mod:`.backends.interrupt`), in-process tiling only; resuming the
        generator afterwards raises :class:`~napari_unet.common.errors.Cancelled`.
    axes_source : str, optional
        Where given ``axes`` came from, for the report: ``"file"`` (its metadata) or
        ``"layer"``; default ``"given"``.
    table : bool
        Put a per-object table (:func:`~.labels.objects.object_table`) on the last event
        (``SegmentProgress.table``); the result is unchanged. Instance labels of in-memory
        images segmented in this process only (the probabilities are kept in memory for it, up
        to :data:`MAX_TABLE_PIXELS`); dask / zarr images, clusters and larger images get
        ``None``.

    The last event (stage ``"done"``) carries a :class:`~.images.domain.SegmentReport`: what was
    decided about the input (axes, channel, colour, inversion, model) and, where the image
    looks unlike the model's training images, a warning.
    """
    check_numbers(tile_shape, overlap, batch_size, min_size, scale, diameter)
    default_model = model is None
    model = builtin_model("nuclei") if default_model else resolve_model(model)
    output = check_output(output, model)
    array = as_array(image)
    axes, source = resolve_axes(array, axes, model)
    if axes_source is not None and source == "given":
        source = axes_source
    # 1. axes: the image in canonical TCZYX order; 2. what the network sees of it
    canon, caxes = ax.to_canonical(array, axes)
    if not is_dask(canon):
        check_finite(canon)
    # told in the report: labels are not an image (judged per channel: not across them)
    labels_like = (
        channels_look_like_labels(canon, caxes.index("C"))
        if "C" in caxes
        else looks_like_labels(canon)
    )
    canon, caxes, model, choice = _network_input(
        array, canon, caxes, axes, source, model, default_model, channel, channel_names, invert
    )
    log.info("input: %s", choice.describe())
    if not (diameter == "auto" and scale == 1.0):  # a given size is checked before any work
        rescale.resolve_scale(scale, None if diameter == "auto" else diameter, model)
    postprocessing_settings(model, min_size, postprocessing)  # so are the detection settings
    ax.check_model_fit(canon.shape, caxes, model.in_channels, model.ndim)
    lazy = is_dask(canon)
    bounded = lazy or client is not None  # "3d" block by block: memory bounded by a block
    zmode = zstack.resolve_z_mode(
        z_mode, caxes, model, output, anisotropy, stitch_threshold, bounded
    )
    blocks = zmode == "3d" and (bounded or block is not None)
    tiling = {
        "tile_shape": tile_shape,
        "overlap": overlap,
        "batch_size": batch_size,
        "device": device,
    }
    if stop is not None:  # in-process tiling only (a cluster's tasks run to their end)
        tiling["stop"] = stop
    pixels = math.prod(s for a, s in zip(caxes, canon.shape) if a != "C")
    if client is not None:  # the workers run the network with torch
        engine = cluster.torch_engine(engine)
    tiling["engine"] = yield from _prepare_engine(model, device, engine, pixels)
    # 2. scale: measured (diameter="auto") or given
    noise = not has_structure(canon, caxes)  # no spatial structure: nothing to measure
    size = yield from _choose_scale(canon, caxes, model, tiling, scale, diameter, noise)
    if tta:  # the measuring looks ran without it: their probabilities are not reused
        if client is not None:
            raise UserInputError("tta runs in this process; leave it out on a cluster")
        tiling["tta"] = True
        size = replace(size, probabilities=None, labels=None)
    factor, known = size.scale, size.probabilities
    # 3. resample, 4. normalise + tile + predict + post-process frame by frame, 5. restore size
    factors = rescale.factors(caxes, model.ndim, factor)
    resampled = any(f != 1.0 for f in factors)
    if resampled and lazy:
        raise UserInputError(
            "scale/diameter work on in-memory images; rescale a dask or zarr image first"
        )
    if zmode == "3d" and not blocks:  # known before the work: a volume that cannot fit is refused
        zstack.check_3d_memory(canon.shape, caxes, anisotropy, factor)
    seen = rescale.resample(canon, factors, order=1) if resampled else canon
    if client is not None:  # on a dask.distributed cluster
        from .clusters.cluster_job import as_lazy, run_on_cluster

        seen = as_lazy(seen, caxes)
    post = postprocessing_settings(model, min_size, postprocessing)
    table = table and _table_fits(output, lazy, client, canon.shape, caxes)
    job = SegmentJob(model, seen, caxes, output, post, return_probabilities or table)
    # the measuring pass's labels, when made with these settings
    known_labels = size.labels if post == postprocessing_settings(model) else None
    relink = zmode in ("stitch", "slices") and output == "instance"  # per-slice ids made 3D
    if blocks:  # 3D objects block by block (dask / zarr, block=): memory bounded by a block
        from .volumes.blockwise import run_blockwise

        seen_diameter = size.diameter * factor if size.diameter else None
        run = run_blockwise(
            job, tiling, anisotropy * factor, block, out, diameter=seen_diameter,
            in_memory=not lazy, client=client,
        )  # fmt: skip
    elif zmode == "3d":  # a 2D model on a Z stack: three plane orientations, 3D objects
        run = zstack.run_3d(job, tiling, anisotropy * factor, out)
    elif client is not None:
        run = run_on_cluster(job, client, tiling, out, in_memory=not lazy)
    elif lazy:  # the ids are linked before the store gets its final name
        finish = _relinker(caxes, zmode, stitch_threshold) if relink else None
        run, relink = job.run_lazy(tiling, out, finish), False
    else:
        run = job.run_in_memory(tiling, known, known_labels)
    # the events report the resampling factor in effect
    labels, probs = yield from relay(
        run, lambda event: replace(event, scale=factor, diameter=size.diameter)
    )
    if relink:
        relabel = zstack.relabel_slices_iter(
            labels, ax.labels_axes(caxes), zmode, stitch_threshold, out
        )
        labels = yield from relay(
            relabel, lambda event: replace(event, scale=factor, diameter=size.diameter)
        )
    if resampled:
        labels, probs = rescale.restore(labels, probs, canon.shape, caxes, output)
    # 6. back to the caller's axes, 7. what was decided and whether the image looked familiar
    report = _report(choice, canon, labels, output, job, size, factor, labels_like, noise)
    if report.warning:
        REPORT_LOG.warning("%s", report.warning)
    objects = _object_table(labels, probs, canon, caxes, report.choice) if table else None
    yield SegmentProgress("done", 1, 1, 0, 1, factor, size.diameter, report=report, table=objects)
    labels = ax.from_canonical(labels, caxes, axes, leading=1 if output == "probabilities" else 0)
    if not return_probabilities or output == "probabilities":
        return labels
    return labels, ax.from_canonical(probs, caxes, axes, leading=1)


def _relinker(caxes: str, zmode: str, threshold: float):
    """Link per-slice ids across slices (:func:`.volumes.zlink.relabel_slices_iter`) in a labels
    store."""
    laxes = ax.labels_axes(caxes)
    return lambda store: zstack.relabel_slices_iter(store, laxes, zmode, threshold, store)


def model_input(
    image: Any,
    model: Any = None,
    *,
    axes: str | None = None,
    channel: int | str | None = None,
    channel_names: Sequence[str] | None = None,
    invert: str | bool = "auto",
) -> tuple[Any, Any, InputChoice]:
    """What the network of :func:`segment` sees of ``image``, for training on it.

    The same decisions as :func:`segment` with the same arguments (the model a stained colour
    image gets, the channel, the optical density of colour, the inversion), so that a model
    fine-tuned on corrections of ``image`` learns from what it is later given.

    Parameters
    ----------
    image : array-like
        As :func:`segment` takes it.
    model : UNet, str or path, optional
        As :func:`segment` takes it; ``None``: the built-in model for this image.
    axes, channel, channel_names, invert
        As :func:`segment` takes them.

    Returns
    -------
    array : ndarray, shape (Y, X), (Z, Y, X) or (C, [Z,] Y, X)
        The network's input before normalisation: no T axis, channels first when more than
        one (the model's ``in_channels``).
    model : UNet
        The model the decisions were made for.
    choice : InputChoice
        What was decided.

    Raises
    ------
    UserInputError
        As :func:`segment` does, and for an image with a time axis.
    """
    default_model = model is None
    model = builtin_model("nuclei") if default_model else resolve_model(model)
    array = as_array(image)
    axes, source = resolve_axes(array, axes, model)
    canon, caxes = ax.to_canonical(array, axes)
    if "T" in caxes:
        raise UserInputError(
            f"image: axes {axes!r} have a time axis; give one frame at a time to train on"
        )
    canon, _, model, choice = _network_input(
        array, canon, caxes, axes, source, model, default_model, channel, channel_names, invert
    )
    return np.asarray(canon), model, choice


def _network_input(
    array, canon, caxes: str, axes: str, source: str, model, default_model: bool,
    channel, channel_names, invert,
):  # fmt: skip
    """The model for the image (the built-in H&E one for a stained colour image) and what its
    network sees of the canonical image: ``(canon, caxes, model, choice)``."""
    colour = ax.is_colour(axes, array.shape)
    model = _model_for(model, default_model, colour, channel, canon, caxes)
    choice = InputChoice(axes=axes, axes_source=source, model=model_name(model))
    if default_model and model.card.get("colour_input"):
        choice = replace(choice, model_reason="built-in for stained colour images")
    canon, caxes, choice = prepare_input(
        canon,
        caxes,
        in_channels=model.in_channels,
        colour=colour,
        channel=channel,
        channel_names=channel_names,
        invert=invert,
        colour_input=model.card.get("colour_input"),
        choice=choice,
    )
    return canon, caxes, model, choice


def model_name(model) -> str:
    """The model's name from its card (``"model"`` when it has none)."""
    card = getattr(model, "card", None) or {}
    return str(card.get("name") or "model")


def _model_for(model, default_model: bool, colour: bool, channel, canon, caxes: str):
    """The built-in H&E model instead of the default one for a stained colour image."""
    if not (default_model and colour and channel is None and model.in_channels == 1):
        return model
    if not is_stained(canon, caxes):
        return model
    return builtin_model(STAINED_MODEL)


@functools.lru_cache(maxsize=4)
def builtin_model(name: str):
    """A built-in model, loaded once per process (inference never changes it)."""
    return resolve_model(name)


def _report(
    choice, canon, labels, output: str, job, size, factor: float, labels_like: bool, noise: bool
) -> SegmentReport:
    """The run's :class:`SegmentReport`: decisions, object count and the domain check."""
    objects = None
    if output == "instance" and isinstance(labels, np.ndarray):
        objects = int(np.count_nonzero(np.bincount(labels.ravel())[1:]))
    background = median_position(canon)
    doubt = job.doubt.share
    warning = check_domain(choice, background, doubt, labels_like, noise)
    return SegmentReport(choice, objects, size.diameter, factor, background, doubt, warning)


def _table_fits(output: str, lazy: bool, client: Any, shape: tuple, caxes: str) -> bool:
    """Whether a run can give a per-object table (instance labels of a small enough image)."""
    if output != "instance" or lazy or client is not None:
        return False
    pixels = math.prod(s for a, s in zip(caxes, shape) if a != "C")
    if pixels > MAX_TABLE_PIXELS:
        log.info("no object table: %d pixels is above %d (memory)", pixels, MAX_TABLE_PIXELS)
        return False
    return True


def _object_table(labels, probs, canon, caxes: str, choice: InputChoice) -> dict | None:
    """The per-object table of in-memory instance labels (canonical axes), or ``None``.

    The intensities are those of the image the model saw (the chosen channel, the grey or
    haematoxylin of a colour image, the mean of a multichannel model's channels), before any
    inversion.
    """
    if not (isinstance(labels, np.ndarray) and isinstance(probs, np.ndarray)):
        return None
    from .labels.objects import object_table

    image = np.asarray(canon, np.float32)
    if "C" in caxes:
        image = image.mean(axis=caxes.index("C"))
    if choice.inverted:  # prepare_input inverts by negation
        image = -image
    return object_table(labels, probs, image, axes=ax.labels_axes(caxes))


def _prepare_engine(
    model, device: str, engine: str | None, pixels: int
) -> Generator[SegmentProgress, None, str]:
    """The engine that runs the network, loaded (and exported once) with a progress stage."""
    if hasattr(model, "predict_iter"):  # a zoo package: bioimageio.core runs its weights
        return "torch"
    dev = resolve_device(device)
    name = resolve_engine(engine, model, dev, pixels)
    if name != "torch":
        stage = f"preparing {name}"
        yield SegmentProgress(stage, 0, 1, 0, 1)
        engine_runner(model, name, dev)
        yield SegmentProgress(stage, 1, 1, 0, 1)
    return name


def _choose_scale(
    canon: Any,
    caxes: str,
    model,
    tiling: dict,
    scale: float,
    diameter: float | str | None,
    noise: bool = False,
) -> Generator[SegmentProgress, None, SizeEstimate]:
    """The resampling factor (and the measured diameter, and a measuring pass to reuse)."""
    if not (diameter == "auto" and scale == 1.0):
        given = None if diameter == "auto" else diameter
        return SizeEstimate(rescale.resolve_scale(scale, given, model), given, None, "given")
    if noise:  # noise has no objects to measure
        REPORT_LOG.warning("the image looks like noise (no spatial structure): not resampled")
        return SizeEstimate(1.0, None, None, "given")
    size = yield from estimate_size_iter(canon, caxes, model, tiling)
    if size.diameter is not None:
        log.info("objects measure ~%.1f px: segmenting at scale %.3f", size.diameter, size.scale)
    if is_dask(canon) and size.scale != 1.0:
        log.warning(
            "the objects look %.2fx the size the model expects; dask/zarr images are not "
            "resampled: rescale the image by %.2f first for a better result",
            1 / size.scale,
            size.scale,
        )
        return replace(size, scale=1.0, probabilities=None, labels=None)
    return size
