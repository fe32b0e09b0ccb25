"""Labels of neighbouring blocks joined across their shared faces (union-find).

Every block labels its core with its own ids ``1..n`` (the *local* ids); the ids of block
``b`` are made unique over the volume by an offset, ``raw = offset[b] + local``. Each block
also labels the plane just below its core along each axis (its *skin*: the last plane of the
neighbouring core, which the block sees in its halo). On that plane both blocks labelled the
same voxels, each with its own ids: an object that crosses the face carries a raw id of each
block there, and the two are joined.

Which pairs are joined: ``a`` (the neighbour's id) and ``b`` (this block's) when more than
half of the voxels of ``a`` or of ``b`` on the plane carry the other, and ``b`` is in this
block's core (an object of the halo alone joins nothing). When the two blocks see the same
probabilities (the halo covers the receptive field) their labels on the plane agree and
every object is joined with itself; the majority rule keeps an odd voxel at an object's rim
from joining two touching nuclei. The joined ids are grouped with
:func:`scipy.sparse.csgraph.connected_components` and numbered ``1..N`` in the order of
their smallest raw id (block raster order, then the block's own order), so a volume of one
block keeps its ids. :func:`merge_blocks` does all this for one time point of a run and
writes the final ids block by block.
"""

from __future__ import annotations

import logging

import numpy as np

from ....common.allocator import trim_freed_memory
from ...frames import SegmentProgress
from ...labels.postprocess import LABEL_DTYPE
from .plan import BlockPlan, plane_below

__all__ = ["MERGE_STAGE", "FaceMerger", "face_pairs", "merge_blocks"]

log = logging.getLogger(__name__)

#: the progress stage of the merge (one event per block written)
MERGE_STAGE = "merging blocks"


def face_pairs(theirs: np.ndarray, ours: np.ndarray, our_ids: np.ndarray) -> np.ndarray:
    """The raw id pairs to join on one face plane.

    Parameters
    ----------
    theirs, ours : ndarray of int, same shape
        The plane's raw ids in the neighbour's labels and in this block's (0: background).
    our_ids : ndarray of int
        This block's raw ids present in its core (sorted).

    Returns
    -------
    ndarray of int64, shape (2, P)
        Pairs ``(theirs, ours)`` to join.
    """
    a = np.asarray(theirs, np.int64).ravel()
    b = np.asarray(ours, np.int64).ravel()
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((2, 0), np.int64)
    pairs, count = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    ids_a, area_a = np.unique(a[a > 0], return_counts=True)
    ids_b, area_b = np.unique(b[b > 0], return_counts=True)
    size_a = area_a[np.searchsorted(ids_a, pairs[0])]
    size_b = area_b[np.searchsorted(ids_b, pairs[1])]
    majority = (2 * count > size_a) | (2 * count > size_b)
    ours_in_core = np.isin(pairs[1], our_ids, assume_unique=False)
    return pairs[:, majority & ours_in_core]


class FaceMerger:
    """Collects the raw ids of the blocks' cores and the pairs joined across faces."""

    def __init__(self) -> None:
        self.n_raw = 0
        self._present: list[np.ndarray] = []
        self._pairs: list[np.ndarray] = []

    def add_block(self, n_local: int, core_local_ids: np.ndarray) -> int:
        """Reserve ``n_local`` raw ids for a block; returns its offset."""
        offset = self.n_raw
        ids = np.asarray(core_local_ids, np.int64)
        self._present.append(ids[ids > 0] + offset)
        self.n_raw += int(n_local)
        return offset

    def add_pairs(self, pairs: np.ndarray) -> None:
        if pairs.size:
            self._pairs.append(pairs)

    def mapping(self) -> tuple[np.ndarray, int]:
        """Raw id to final id (``0`` for none), and the number of objects ``N``.

        Final ids are ``1..N``, one per group of joined raw ids present in some core,
        numbered in the order of the group's smallest present raw id.
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.n_raw + 1
        present = (
            np.unique(np.concatenate(self._present)) if self._present else np.zeros(0, np.int64)
        )
        edges = np.concatenate(self._pairs, axis=1) if self._pairs else np.zeros((2, 0), np.int64)
        graph = coo_matrix((np.ones(edges.shape[1], np.int8), (edges[0], edges[1])), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        groups = component[present]
        # np.unique sorts; the index of each group's first (smallest) present id orders them
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        rank = np.empty(first.size, np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(1, first.size + 1)
        mapping = np.zeros(n, LABEL_DTYPE)
        mapping[present] = rank[inverse]
        return mapping, int(first.size)


def merge_blocks(records, labels, index, plan: BlockPlan, frame: int, n_frames: int, final=None):
    """Join the blocks' ids across faces and write the final ids ``1..N``, block by block.

    Raw ids are offset in block raster order, whatever order the blocks finished in. The
    final ids go into ``final`` (default: ``labels``, in place).
    """
    final = labels if final is None else final
    trim_freed_memory()  # the last block's freed arrays, before the merge's own
    merger = FaceMerger()
    offsets = {blk.grid: merger.add_block(*records[blk.grid][:2]) for blk in plan.blocks}
    for blk in plan.blocks:
        ours_in_core = records[blk.grid][1]
        ours_in_core = ours_in_core[ours_in_core > 0].astype(np.int64) + offsets[blk.grid]
        for axis, neighbour in plan.below(blk):
            face = plane_below(blk.core, axis)
            theirs = _raw(np.asarray(labels[(*index, *face)]), offsets[neighbour.grid])
            ours = _raw(records[blk.grid][2][axis], offsets[blk.grid])
            merger.add_pairs(face_pairs(theirs, ours, ours_in_core))
    mapping, n = merger.mapping()
    total = len(plan.blocks)
    for b, blk in enumerate(plan.blocks):
        key = (*index, *blk.core)
        final[key] = mapping[_raw(np.asarray(labels[key]), offsets[blk.grid])]
        yield SegmentProgress(MERGE_STAGE, b + 1, total, frame, n_frames)
    log.info("frame %d: %d objects from %d blocks", frame, n, total)
    return n


def _raw(local: np.ndarray, offset: int) -> np.ndarray:
    raw = local.astype(np.int64)
    return np.add(raw, offset, out=raw, where=raw > 0)  # in place: one int64 array per core
