"""``z_mode="3d"`` block by block: memory bounded by the block, not the volume.

For each time point, block after block (:mod:`.plan`): read the block's outer window (core
+ halo) of the normalised image, segment it as the in-memory run segments a volume
(:func:`.block.label_block`: YX, ZX and ZY planes averaged, 3D instance post-processing),
and write its core into the output with the block's own ids. On a cluster the blocks are
tasks (:mod:`.cluster`) and their results are written here as they come. The ids of
neighbouring blocks are joined across their faces (:mod:`.merge`) and, once every block is
written, the output is relabelled block by block so that the ids are ``1..N`` per time
point.

A dask / zarr image is written into a zarr store under a hidden temporary name and renamed
to ``out`` only when relabelled (a run killed at any moment leaves nothing under ``out``).
Until then, a run into a file keeps its finished blocks beside ``out`` (:mod:`.resume`): the
same run again, after a Ctrl-C, a Cancel or a kill, segments only the blocks it lacks. An
in-memory image gives numpy arrays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ....common.errors import UserInputError
from ....common.progress import relay
from ...frames import SegmentJob, SegmentProgress, into_stores, is_dask, lazy_results
from ...images import axes as ax
from ...labels.postprocess import LABEL_DTYPE
from .block import BlockResult, label_block
from .merge import merge_blocks
from .plan import (
    BYTES_PER_VOXEL,
    Block,
    BlockPlan,
    block_halo,
    check_block,
    default_block,
    plan_blocks,
    pooling_align,
    read_factor,
)
from .resume import BlockLedger, run_fingerprint

log = logging.getLogger(__name__)

__all__ = ["plan_for", "run_blockwise"]

#: the stage of the last pass (the ids joined across faces, written 1..N)


def plan_for(
    job: SegmentJob,
    z_factor: float,
    block: Any = None,
    diameter: float | None = None,
    halo: tuple[int, int, int] | None = None,
) -> BlockPlan:
    """The block plan of ``job``'s volumes, checked against the free memory.

    ``block`` (Z, Y, X) voxels, default :func:`.plan.default_block` (the input's chunks and
    the free memory); ``halo`` default :func:`.plan.block_halo`.

    Raises
    ------
    UserInputError
        A malformed ``block``, or one whose outer window cannot fit in the free memory.
    """
    from ....common.device import available_memory

    shape = tuple(job.labels_shape[-3:])
    halo = halo or block_halo(job.model, z_factor, diameter)
    given = check_block(block)
    size = given or default_block(shape, halo, z_factor, _input_chunks(job))
    plan = plan_blocks(shape, size, halo, pooling_align(job.model, z_factor))
    need = plan.max_outer_voxels() * BYTES_PER_VOXEL
    reads = read_factor(shape, plan.block, plan.halo)
    if given is not None and reads > MAX_READ_FACTOR:
        raise UserInputError(
            f"block {given} is small against its halo {halo} (the network's receptive field):"
            f" every voxel would be read and segmented about {reads:.0f} times, in "
            f"{len(plan.blocks)} blocks; give a block with Y and X sides of at least "
            f"{halo[1]} (--block Z Y X), or leave it out to size it from the free memory"
        )
    free = available_memory()
    if given is not None and free is not None and need > free:
        raise UserInputError(
            f"block {given} with its halo {halo} reads up to {plan.max_outer_voxels():.3g} "
            f"voxels: about {need / 1e9:.1f} GB, and {free / 1e9:.1f} GB are free; give a "
            "smaller block (--block Z Y X), or leave it out to size it from the free memory"
        )
    log.info(
        "z_mode '3d' block by block: %d blocks of %s voxels (halo %s, %.1fx the voxels read), "
        "about %.2f GB each",
        len(plan.blocks),
        plan.block,
        plan.halo,
        reads,
        need / 1e9,
    )
    return plan


#: a given block that makes the run read each voxel more often than this is refused (a block
#: of 16 px against a halo of 107 px reads each voxel ~200 times: hours for seconds of work)
MAX_READ_FACTOR = 32


def _input_chunks(job: SegmentJob) -> tuple[int, int, int] | None:
    if not is_dask(job.canon):
        return None
    return tuple(int(job.canon.chunks[job.caxes.index(a)][0]) for a in "ZYX")  # type: ignore[return-value]


def run_blockwise(
    job: SegmentJob,
    tiling: dict,
    z_factor: float,
    block: Any = None,
    out: str | os.PathLike | None = None,
    *,
    diameter: float | None = None,
    halo: tuple[int, int, int] | None = None,
    in_memory: bool | None = None,
    client: Any = None,
) -> Generator[SegmentProgress, None, tuple[Any, Any]]:
    """:func:`..zstack.run_3d` block by block; returns ``(labels, probabilities)``.

    Parameters
    ----------
    job : SegmentJob
        A 2D model on an image with a Z axis (canonical axes).
    tiling : dict
        As for :func:`..zstack.run_3d`.
    z_factor : float
        XY pixels per z step in the image the model sees.
    block : (Z, Y, X), optional
        Core size of a block in voxels; default from the input's chunks and the free memory.
    out : path-like, optional
        dask / zarr input: the zarr store of the result (a temporary one when omitted).
    diameter : float, optional
        Typical object diameter (XY pixels of the image the model sees) for the halo.
    halo : (Z, Y, X), optional
        Voxels of context around each core; default :func:`.plan.block_halo`.
    in_memory : bool, optional
        Give numpy arrays (the caller's image was one, e.g. sent to a cluster as dask);
        default: for numpy input.
    client : distributed.Client or str, optional
        Segment the blocks on this dask.distributed cluster (one task per block,
        :mod:`.cluster`); the results are written here, so ``out`` needs no shared storage.

    Returns
    -------
    labels, probabilities
        numpy arrays for numpy input, dask arrays over zarr stores for dask / zarr input
        (``None`` probabilities unless kept), as :meth:`SegmentJob.run_in_memory`.
    """
    lazy = is_dask(job.canon)
    plan = plan_for(job, z_factor, block, diameter, halo)
    if in_memory is None:
        in_memory = not lazy
    if not lazy:
        import dask.array as da  # read window by window, normalised as the whole image

        job = SegmentJob(
            job.model, da.from_array(job.canon), job.caxes, job.output, job.post, job.keep_probs
        )
    run = _run_into_memory if in_memory else _run_into_stores
    if client is None:
        return (yield from run(job, plan, tiling, z_factor, out))
    from ...clusters.cluster import cluster_client
    from .cluster import blocks_on_cluster

    keep = job.keep_probs or job.output == "probabilities"
    with cluster_client(client) as connected:
        futures: list = []
        try:
            source = blocks_on_cluster(connected, job, plan, tiling, z_factor, keep, futures)
            return (yield from run(job, plan, tiling, z_factor, out, source))
        except BaseException:  # cancelled or failed: stop the blocks in flight
            connected.cancel(futures)
            raise


def _run_into_memory(job, plan, tiling, z_factor, out=None, source=None):
    keep = job.keep_probs or job.output == "probabilities"
    labels = None if job.output == "probabilities" else np.zeros(job.labels_shape, LABEL_DTYPE)
    probs = np.zeros((job.n_classes, *job.labels_shape), np.float32) if keep else None
    yield from _segment_frames(job, plan, tiling, z_factor, labels, probs, source)
    return (probs if labels is None else labels), probs


def _run_into_stores(job, plan, tiling, z_factor, out, source=None):
    keep = job.keep_probs or job.output == "probabilities"
    if out is not None and not keep:  # labels into a file: finished blocks outlive a stop
        return (yield from _run_resumable(job, plan, tiling, z_factor, out, source))

    def work(root: Path, probs_dir: Path):
        labels_z, probs_z = _open_stores(job, plan, root, probs_dir, keep)
        yield from _segment_frames(job, plan, tiling, z_factor, labels_z, probs_z, source)
        return probs_z, labels_z

    separate = job.output != "probabilities" and keep  # else no probabilities store at all
    probs_z, labels_z, probs_temp, labels_temp = yield from into_stores(
        out, work, output=job.output, separate_probs=separate
    )
    return lazy_results(probs_z, labels_z, keep, probs_temp, labels_temp)


def _run_resumable(job, plan, tiling, z_factor, out, source=None):
    """Labels into the zarr store ``out``, the finished blocks kept until it is complete.

    The blocks write their local ids into the work folder (:mod:`.resume`); the final ids
    go into ``out`` (under a temporary name until complete). A stopped run keeps the work
    folder, and the same run again segments only the blocks it lacks.
    """
    ledger = BlockLedger(out, run_fingerprint(job, plan, tiling, z_factor))
    total = len(plan.blocks) * len(ax.frame_indices(job.canon.shape, job.caxes, 3))
    if ledger.resumed:
        log.warning(
            "resuming the interrupted run kept in %s: %d of %d blocks are already done",
            ledger.folder,
            ledger.resumed,
            total,
        )
    raw = _labels_store(job, plan, ledger.labels_path, mode="a")

    def work(root: Path, probs_dir: Path):
        final = _labels_store(job, plan, root, mode="w")
        yield from _segment_frames(
            job, plan, tiling, z_factor, raw, None, source, ledger=ledger, final=final
        )
        return None, final

    try:
        probs_z, labels_z, _, labels_temp = yield from into_stores(
            out, work, output=job.output, separate_probs=False
        )
    except BaseException:
        kept = ledger.count()
        if kept == 0:
            ledger.remove()
        else:
            log.warning(
                "kept %d of %d finished blocks in %s: the same command resumes from them "
                "(delete that folder to start again)",
                kept,
                total,
                ledger.folder,
            )
        raise
    ledger.remove()
    return lazy_results(probs_z, labels_z, False, None, labels_temp)


def _labels_store(job, plan: BlockPlan, path: Path, mode: str):
    import zarr

    lead = (1,) * (len(job.labels_shape) - 3)
    chunks = (*lead, *store_chunks(plan.block, _input_chunks(job)))
    return zarr.open_array(
        str(path), mode=mode, shape=job.labels_shape, chunks=chunks, dtype=LABEL_DTYPE
    )


def _open_stores(job, plan: BlockPlan, root: Path, probs_dir: Path, keep: bool):
    """The labels store at ``root`` and the probabilities store (``None`` unless kept)."""
    import zarr

    lead = (1,) * (len(job.labels_shape) - 3)
    chunks = (*lead, *store_chunks(plan.block, _input_chunks(job)))
    labels_z = probs_z = None
    if job.output != "probabilities":
        labels_z = _labels_store(job, plan, root, mode="w")
    if keep:
        probs_z = zarr.open_array(
            str(probs_dir),
            mode="w",
            shape=(job.n_classes, *job.labels_shape),
            chunks=(job.n_classes, *chunks),
            dtype="float32",
        )
    return labels_z, probs_z


def store_chunks(block, input_chunks) -> tuple[int, int, int]:
    """Chunks of the output (Z, Y, X): the input's where they divide the block, else the block's.

    Blocks then write whole chunks, and the relabelling reads and writes whole chunks.
    """
    if input_chunks is None:
        return tuple(block)  # type: ignore[return-value]
    return tuple(c if b % c == 0 else b for b, c in zip(block, input_chunks))  # type: ignore[return-value]


# -- the blocks of every time point ------------------------------------------------------------
def _segment_frames(
    job,
    plan: BlockPlan,
    tiling,
    z_factor,
    labels,
    probs,
    source=None,
    *,
    ledger: BlockLedger | None = None,
    final=None,
):
    """Every time point's blocks into ``labels`` / ``probs`` (numpy or zarr, canonical axes).

    ``source(normalized, keep, skip)``: a generator that segments the blocks of one time
    point, but those in ``skip``, somewhere else (a cluster) and hands each result to
    ``keep``; default here, one block after the other. ``ledger``: the finished blocks kept
    (:mod:`.resume`): those already there are not segmented again, and each new one is
    recorded. ``final``: where the final ids go (default: ``labels``, in place).
    """
    frames = ax.frame_indices(job.canon.shape, job.caxes, 3)
    keep_probs = probs is not None
    for v, index in enumerate(frames):
        normalized = job.normalized_frame(index)  # (C, Z, Y, X), lazy
        records: dict[tuple[int, int, int], tuple[int, np.ndarray, dict]] = {}
        if ledger is not None:
            ledger.check_normalization(v, *job.frame_normalization(index))
            records.update(ledger.finished(v, plan))
        skip = frozenset(records)

        def keep(blk: Block, result: BlockResult, v=v, index=index, records=records) -> None:
            if probs is not None:
                probs[(slice(None), *index, *blk.core)] = result.probs
            if labels is not None:
                labels[(*index, *blk.core)] = result.labels
            if job.output == "instance" or ledger is not None:
                records[blk.grid] = (result.n, np.unique(result.labels), result.skins)
            if ledger is not None:  # after its labels: a recorded block is whole
                ledger.record(v, blk, *records[blk.grid])

        if source is None:
            steps = _blocks_here(job, normalized, plan, tiling, z_factor, keep_probs, keep, skip)
        else:
            steps = source(normalized, keep, skip)
        yield from relay(steps, _frame_event(v, len(frames)))
        if job.output == "instance":
            yield from merge_blocks(records, labels, index, plan, v, len(frames), final)
        elif final is not None:  # the blocks' labels are final: copied block by block
            for blk in plan.blocks:
                key = (*index, *blk.core)
                final[key] = labels[key]


def _frame_event(frame: int, n_frames: int):
    return lambda e: SegmentProgress(e.stage, e.done, e.total, frame, n_frames)


def _blocks_here(
    job, normalized, plan: BlockPlan, tiling, z_factor, keep_probs, keep, skip=frozenset()
):
    """Segment the blocks (but those in ``skip``) one after the other; ``keep`` each result."""
    todo = [blk for blk in plan.blocks if blk.grid not in skip]
    planes = sum(sum(s.stop - s.start for s in b.outer) for b in todo)
    done = 0
    for b, blk in enumerate(todo, start=len(plan.blocks) - len(todo)):
        window = np.asarray(normalized[(slice(None), *blk.outer)], np.float32)
        step = label_block(
            job.model, window, blk, plan, tiling, z_factor, job.post, job.output, keep_probs
        )
        del window
        result = yield from _relay_block(step, done, planes)
        done += sum(s.stop - s.start for s in blk.outer)
        keep(blk, result)
        yield SegmentProgress("postprocess", b + 1, len(plan.blocks), 0, 1)


def _relay_block(step, done: int, planes: int):
    """One block's events, ``"predict"`` counted over all the time point's blocks' planes."""
    while True:
        try:
            event = next(step)
        except StopIteration as stop:
            return stop.value
        if event.stage == "predict":
            event = SegmentProgress("predict", done + event.done, planes, 0, 1)
        try:
            yield event
        except GeneratorExit:
            step.close()
            raise
