"""Labels from probabilities on a dask.distributed cluster, one task per chunk.

The same passes as :func:`..labels.postprocess.instance_labels_chunked`, with each chunk's work sent
to a worker and the small global steps done here, so the labels are the same as in-process:

1. seeds: each task labels the seeds of one chunk (with ``halo`` pixels of context) into a
   scratch zarr store with ids from 1 and returns how many it found; the ids become global by
   adding the counts of the chunks before it (in chunk order, as in-process), which
   :class:`GlobalSeeds` does when the store is read;
2. seeds that touch across a chunk face are merged into one id (here: only the faces are read);
3. watershed: each task grows the merged seeds of one chunk into the labels store and returns
   its ids and pixel counts; small objects are dropped and the ids renumbered 1..N;
4. relabel: each task rewrites one chunk with the final ids.

The zarr stores must be on storage every worker reaches; every task writes whole chunks, so
no locks are needed.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from ...common.errors import UserInputError
from ..labels.postprocess import (
    DEFAULT_HALO,
    LABEL_DTYPE,
    ChunkProgress,
    _check_instance_probs,
    _chunks_of,
    _merge_across_faces,
    _seed_region,
    _watershed_region,
    chunk_regions,
    semantic_labels,
)

__all__ = ["GlobalSeeds", "gather", "instance_labels_on_cluster", "semantic_labels_on_cluster"]


def gather(client: Any, futures: list, batch: list, start: int, total: int):
    """Wait for ``batch`` (futures), yielding :class:`ChunkProgress`; returns their results.

    The futures stay in ``futures`` (the run's in-flight list, cancelled when the run is
    closed) until they are done.
    """
    from distributed import as_completed

    futures.extend(batch)
    # the client's own loop: a client made for --scheduler is not the default one
    for done, future in enumerate(as_completed(batch, loop=client.loop), start=1):
        try:
            future.result()
        except OSError as err:
            raise UserInputError(
                f"a dask worker could not read or write the data: {err}; keep the input and "
                "the output on storage every worker reaches, under the same path"
            ) from err
        yield ChunkProgress(start + done, total)
    results = [f.result() for f in batch]
    for f in batch:
        futures.remove(f)
    return results


def semantic_labels_on_cluster(
    client: Any, probabilities, out, futures: list
) -> Generator[ChunkProgress, None, None]:
    """:func:`..labels.postprocess.semantic_labels_chunked`, one task per chunk of ``out``."""
    regions = chunk_regions(out.shape, _chunks_of(out))
    batch = [client.submit(_semantic_task, probabilities, out, r, pure=False) for r in regions]
    yield from gather(client, futures, batch, 0, len(regions))


def instance_labels_on_cluster(
    client: Any,
    probabilities,
    out,
    scratch,
    futures: list,
    *,
    min_size: int = 10,
    seed_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    split: float = 0.0,
    halo: int = DEFAULT_HALO,
) -> Generator[ChunkProgress, None, int]:
    """:func:`..labels.postprocess.instance_labels_chunked` on a cluster; same labels, same
    arguments.

    ``scratch``: an int32 zarr array shaped and chunked like ``out`` (on shared storage) for
    the seeds; ``futures``: the run's in-flight futures. Returns the number of objects.
    """
    _check_instance_probs(probabilities, out.shape)
    shape, chunks = tuple(out.shape), _chunks_of(out)
    regions = chunk_regions(shape, chunks)
    n, total = len(regions), 3 * len(regions)
    batch = [
        client.submit(
            _seeds_task, probabilities, scratch, r, shape, halo, seed_threshold, split, pure=False
        )
        for r in regions
    ]
    counts = yield from gather(client, futures, batch, 0, total)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(LABEL_DTYPE)
    seeds = GlobalSeeds(scratch, offsets)
    mapping = _merge_across_faces(seeds, shape, chunks, int(sum(counts)))
    [remote_mapping] = client.scatter([mapping], broadcast=True)
    batch = [
        client.submit(
            _watershed_task,
            probabilities,
            seeds,
            remote_mapping,
            out,
            r,
            shape,
            halo,
            foreground_threshold,
            pure=False,
        )
        for r in regions
    ]
    parts = yield from gather(client, futures, batch, n, total)
    sizes = np.zeros(int(mapping.max()) + 1, np.int64)
    for ids, pixels in parts:
        np.add.at(sizes, ids, pixels)
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    final = np.zeros(sizes.size, LABEL_DTYPE)
    final[keep] = np.arange(1, int(keep.sum()) + 1, dtype=LABEL_DTYPE)
    [remote_final] = client.scatter([final], broadcast=True)
    batch = [client.submit(_relabel_task, out, r, remote_final, pure=False) for r in regions]
    yield from gather(client, futures, batch, 2 * n, total)
    return int(keep.sum())


class GlobalSeeds:
    """A read-only view of a seeds store whose ids count from 1 in every chunk, with the ids
    made global: each chunk's ids are shifted by ``offsets[chunk]`` (chunks in C order)."""

    def __init__(self, store, offsets: np.ndarray):
        self.store, self.offsets = store, offsets
        self.shape, self.chunks = tuple(store.shape), _chunks_of(store)
        self.grid = tuple(-(-s // c) for s, c in zip(self.shape, self.chunks))

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        local = np.asarray(self.store[key])
        cells = []
        for k, n, c in zip(key, self.shape, self.chunks):
            cells.append(np.arange(*k.indices(n)) // c if isinstance(k, slice) else [int(k) // c])
        chunk = np.ravel_multi_index(np.ix_(*cells), self.grid).reshape(local.shape)
        return np.where(local > 0, local + self.offsets[chunk], 0).astype(LABEL_DTYPE)


# -- the tasks (run on the workers) ---------------------------------------------------------
def _semantic_task(probabilities, out, region) -> None:
    out[region] = semantic_labels(np.asarray(probabilities[(slice(None), *region)]))


def _seeds_task(probabilities, scratch, region, shape, halo, seed_threshold, split) -> int:
    from scipy import ndimage as ndi

    lab, n = ndi.label(_seed_region(probabilities, region, shape, halo, seed_threshold, split))
    scratch[region] = lab.astype(LABEL_DTYPE, copy=False)
    return int(n)


def _watershed_task(probabilities, seeds, mapping, out, region, shape, halo, threshold):
    lab = _watershed_region(probabilities, seeds, mapping, region, shape, halo, threshold)
    out[region] = lab
    ids, pixels = np.unique(lab, return_counts=True)
    return ids, pixels


def _relabel_task(out, region, final) -> None:
    out[region] = final[np.asarray(out[region])]
