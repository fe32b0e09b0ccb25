"""A segmentation job run on a dask.distributed cluster, frame by frame, into zarr stores.

:func:`run_on_cluster` is the cluster form of :meth:`..frames.SegmentJob.run_lazy`: the same
stores, the same tile plan (:func:`..tiling.predict_dask.predict_tiled_dask`, one task per batch of
tiles) and the same post-processing (:mod:`.cluster_postprocess`), so the labels equal the
in-process ones. The model is sent to every worker once (``client.scatter(broadcast=True)``);
the probabilities and the seeds go to scratch zarr stores beside the output, where the
workers can reach them. Progress comes from the futures as they finish; closing the
generator cancels the futures in flight and removes the partial output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ...common.atomic import remove_stale_temporaries, replace_dir, temporary_name
from ...common.progress import relay
from ..frames import (
    _TEMP_PREFIX,
    _WORK_PREFIX,
    SegmentJob,
    SegmentProgress,
    _FrameView,
    _reopen,
    is_dask,
    lazy_results,
)
from ..labels.postprocess import LABEL_DTYPE, chunk_regions
from .cluster import check_shared, cluster_client
from .cluster_postprocess import gather, instance_labels_on_cluster, semantic_labels_on_cluster

__all__ = ["as_lazy", "run_on_cluster"]

#: chunk size (pixels per spatial axis) of an in-memory image sent to a cluster
MEMORY_CHUNK = 1024


def as_lazy(canon: Any, caxes: str) -> Any:
    """A dask array of a canonical (TCZYX) image: itself, or numpy cut into chunks of
    ``MEMORY_CHUNK`` pixels per spatial axis (one T/C/Z plane deep) that travel in the graph."""
    if is_dask(canon):
        return canon
    import dask.array as da

    chunks = tuple(MEMORY_CHUNK if a in "YX" else (-1 if a == "C" else 1) for a in caxes)
    return da.from_array(canon, chunks=chunks)


def run_on_cluster(
    job: SegmentJob, client: Any, tiling: dict, out, in_memory: bool = False
) -> Generator[SegmentProgress, None, tuple]:
    """Segment every frame of ``job`` on a cluster; returns ``(labels, probabilities)``.

    ``client``: a ``distributed.Client`` or a scheduler address (connected here, closed at
    the end). ``out``: the labels (or probabilities) zarr store, on storage the workers
    reach; a temporary folder when None (works when the workers run on this machine).
    ``in_memory``: return numpy arrays (the input was one) instead of dask arrays.
    Raises :class:`UserInputError` when the scheduler cannot be reached, a worker lacks
    napari-unet or cannot see the output folder.
    """
    with cluster_client(client) as connected:
        labels, probs = yield from _run(job, connected, tiling, out)
    if in_memory:
        labels = np.asarray(labels)
        probs = None if probs is None else np.asarray(probs)
    return labels, probs


def _run(
    job: SegmentJob, client: Any, tiling: dict, out
) -> Generator[SegmentProgress, None, tuple]:

    keep = job.keep_probs or job.output == "probabilities"
    final = Path(out) if out is not None else None
    if final is not None:  # written under a temporary name beside it, renamed when complete
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final)
        root = temporary_name(final)
        work = temporary_name(final, "work")
    else:
        root = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-"))
        work = Path(tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{os.getpid()}-"))
    check_shared(client, root.parent)
    work.mkdir(exist_ok=True)
    probs_dir = root if job.output == "probabilities" else work / "probabilities.zarr"
    futures: list = []
    try:
        probs_z, labels_z = job._open_stores(root, probs_dir)
        [model] = client.scatter([job.model], broadcast=True)
        scratch = _scratch(labels_z, job, work) if job.output == "instance" else None
        n = len(job.frames)
        for i, index in enumerate(job.frames):
            step = _predict_frame(job, client, model, tiling, probs_z, index, futures)
            yield from relay(step, _progress("predict", i, n))
            if labels_z is not None:
                step = _postprocess_frame(job, client, probs_z, labels_z, scratch, index, futures)
                yield from relay(step, _progress("postprocess", i, n))
    except BaseException:  # cancelled (GeneratorExit) or failed: stop the work, no partial output
        client.cancel(futures)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        raise
    shutil.rmtree(work / "seeds.zarr", ignore_errors=True)
    if final is not None:
        try:
            replace_dir(root, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
            raise
        probs_z, labels_z = _reopen(final, probs_z, labels_z, job.output)
        probs_dir = final if probs_dir == root else probs_dir
        root = final
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return lazy_results(
        probs_z,
        labels_z,
        keep,
        probs_temp=work if probs_dir != root else None,
        labels_temp=root if out is None else None,
    )


def _predict_frame(job, client, model, tiling, probs_z, index, futures):
    """Probabilities of one frame into ``probs_z``: one write task per chunk of the store."""
    import dask

    from ..tiling.predict_dask import predict_tiled_dask

    probs = predict_tiled_dask(
        job.model,
        job.normalized_frame(index),
        tile_shape=tiling.get("tile_shape"),
        overlap=tiling.get("overlap"),
        batch_size=tiling.get("batch_size"),
        device=tiling.get("device", "auto"),
        remote_model=model,
    )
    view = _FrameView(probs_z, index, leading=1)
    regions = chunk_regions(view.shape[1:], view.chunks[1:])
    # one graph for all blocks (to_delayed), so the tiles shared by blocks are predicted once
    blocks = probs.rechunk(view.chunks).to_delayed().ravel()
    writes = [
        dask.delayed(_write, pure=False)(view, region, block)
        for region, block in zip(regions, blocks, strict=True)
    ]
    yield from gather(client, futures, client.compute(writes), 0, len(regions))


def _write(view, region, block: np.ndarray) -> None:
    view[(slice(None), *region)] = block


def _postprocess_frame(job, client, probs_z, labels_z, scratch, index, futures):
    probs = _FrameView(probs_z, index, leading=1)
    labels = _FrameView(labels_z, index)
    if job.output == "semantic":
        return (yield from semantic_labels_on_cluster(client, probs, labels, futures))
    return (
        yield from instance_labels_on_cluster(client, probs, labels, scratch, futures, **job.post)
    )


def _scratch(labels_z, job, work: Path):
    """The seeds store of one frame, chunked like the labels."""
    import zarr

    frame = _FrameView(labels_z, job.frames[0])
    return zarr.open_array(
        str(work / "seeds.zarr"),
        mode="w",
        shape=frame.shape,
        chunks=frame.chunks,
        dtype=LABEL_DTYPE,
    )


def _progress(stage: str, frame: int, n_frames: int):
    """Chunk progress of one frame as :class:`SegmentProgress` over all frames."""

    def translate(event) -> SegmentProgress:
        return SegmentProgress(
            stage, frame * event.total + event.done, event.total * n_frames, frame, n_frames
        )

    return translate
