"""Blockwise ``z_mode="3d"`` on a dask.distributed cluster: one task per block.

The blocks are independent: each task reads its block's outer window of the normalised
image (a slice of the image's dask graph, computed on the workers), segments it with
:func:`.block.label_block` and returns the core's labels and its skins. This process writes each
result into the output as it arrives (so the output needs no storage shared with the workers)
and joins the blocks' ids across faces at the end, as in-process: the labels are the same.
The model is sent to every worker once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ....common.progress import run_to_end
from ...frames import SegmentJob, SegmentProgress
from .block import label_block
from .plan import Block, BlockPlan

__all__ = ["blocks_on_cluster"]


def blocks_on_cluster(
    client: Any,
    job: SegmentJob,
    plan: BlockPlan,
    tiling: dict,
    z_factor: float,
    keep_probs: bool,
    futures: list,
) -> Callable[[Any, Callable], Generator[SegmentProgress, None, None]]:
    """A block source for :func:`.run._segment_frames` that runs the blocks on ``client``.

    ``futures``: the run's in-flight futures (cancelled by the caller when the run stops).
    """
    [model] = client.scatter([job.model], broadcast=True)
    remote = {k: v for k, v in tiling.items() if k != "stop"}  # an Event stays here

    def source(normalized, keep, skip=frozenset()) -> Generator[SegmentProgress, None, None]:
        import dask
        from distributed import as_completed

        todo = [blk for blk in plan.blocks if blk.grid not in skip]
        if not todo:
            return
        tasks = [
            dask.delayed(_block_task, pure=False)(
                model,
                normalized[(slice(None), *blk.outer)],
                blk,
                plan,
                remote,
                z_factor,
                job.post,
                job.output,
                keep_probs,
            )
            for blk in todo
        ]
        batch = client.compute(tasks)
        futures.extend(batch)
        blocks = {f.key: blk for f, blk in zip(batch, todo, strict=True)}
        # the client's own loop: a client made for --scheduler is not the default one
        for done, future in enumerate(as_completed(batch, loop=client.loop), start=1):
            keep(blocks[future.key], future.result())
            futures.remove(future)
            future.release()
            yield SegmentProgress("predict", done, len(batch), 0, 1)

    return source


def _block_task(
    model,
    window,
    block: Block,
    plan: BlockPlan,
    tiling: dict,
    z_factor: float,
    post: dict,
    output: str,
    keep_probs: bool,
):
    """One block on a worker: :func:`.block.label_block` run to its end."""
    window = np.asarray(window, np.float32)
    steps = label_block(model, window, block, plan, tiling, z_factor, post, output, keep_probs)
    return run_to_end(steps)
