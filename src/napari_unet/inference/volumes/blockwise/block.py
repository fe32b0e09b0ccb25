"""One block: the in-memory ``"3d"`` path on its outer window, cropped to its core.

:func:`label_block` is all a block needs, in this process or as a task on a cluster worker
(:mod:`.cluster`): the orientations averaged (:func:`..zstack.average_orientations_iter`),
the 3D instance labels (:func:`..zstack.instances_3d`), the core and the skins cut out.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from ....common.allocator import return_freed_memory, trim_freed_memory
from ...frames import SegmentProgress
from ...labels.postprocess import semantic_labels
from ..zstack import average_orientations_iter, instances_3d
from .plan import Block, BlockPlan, plane_below

__all__ = ["BlockResult", "label_block"]


@dataclass
class BlockResult:
    """What one block gives: its core's labels (local ids) and probabilities, its skins.

    Attributes
    ----------
    labels : ndarray of int32, shape of the core, or None
        Local ids ``1..n`` (instance) or classes (semantic); ``None`` for probabilities.
    n : int
        The number of local ids the block used (``labels`` holds some of them).
    skins : dict of int to ndarray
        Per axis with a neighbour below: the block's labels on the last plane of that
        neighbour's core (instance output only).
    probs : ndarray of float32, shape (K, *core), or None
    """

    labels: np.ndarray | None
    n: int
    skins: dict[int, np.ndarray]
    probs: np.ndarray | None


def label_block(
    model,
    window: np.ndarray,
    block: Block,
    plan: BlockPlan,
    tiling: dict,
    z_factor: float,
    post: dict,
    output: str,
    keep_probs: bool = False,
) -> Generator[SegmentProgress, None, BlockResult]:
    """Segment one block from its outer ``window`` (C, Z, Y, X) of the normalised image.

    The in-memory ``"3d"`` path on the window (:func:`..zstack.average_orientations_iter`,
    :func:`..zstack.instances_3d`), cropped to the core. Yields that path's events.
    """
    return_freed_memory()
    trim_freed_memory()  # what the last block left free inside the heap, before this one's peak
    avg = yield from average_orientations_iter(model, window, z_factor, tiling)
    del window  # the caller passes its only reference: the post-processing needs room
    inner = block.inner
    core_probs = avg[(slice(None), *inner)].copy() if keep_probs else None
    if output == "probabilities":
        return BlockResult(None, 0, {}, core_probs)
    if output == "semantic":
        return BlockResult(semantic_labels(avg[(slice(None), *inner)]), 0, {}, core_probs)
    yield SegmentProgress("postprocess", 0, 1, 0, 1)
    full = yield from instances_3d(avg, post, z_factor, 0, 1)
    del avg
    skins = {}
    for axis, _ in plan.below(block):
        skins[axis] = full[plane_below(inner, axis)].copy()
    core = np.ascontiguousarray(full[inner])
    return BlockResult(core, int(full.max(initial=0)), skins, core_probs)
