"""Tiled inference as a dask graph, for dask.distributed clusters.

Each tile of the :class:`~.tile_plan.TilePlan` is one task: it reads its input window from the
(dask) image, runs the network and returns its weighted probabilities. The result is assembled
from *cells*, the pieces of the image between consecutive edges of the tiles' blending
supports: each cell is the sum of the (at most ``2**ndim``) tiles that cover it. The network
is one task too, so a cluster ships it to each worker once.
"""

from __future__ import annotations

import functools
import itertools
import operator
from typing import Any

import numpy as np

from ...common.device import resolve_device
from ...model.inference import inference_model
from ...model.unet import UNet
from .tile_plan import AxisPlan, TilePlan, plan_tiles
from .tiles import (
    IntOrSeq,
    check_batch_size,
    check_image,
    check_model,
    check_tile,
    forward_probabilities,
    reflect_index,
)


def predict_tiled_dask(
    model: UNet,
    image: Any,
    *,
    tile_shape: IntOrSeq = None,
    overlap: IntOrSeq = None,
    batch_size: int | None = 1,
    device: str = "auto",
    blend: str = "gaussian",
    remote_model: Any = None,
) -> Any:
    """Lazy probabilities ``(K, *spatial)`` float32 of ``image``, one dask task per batch.

    Parameters
    ----------
    model : UNet
        The network (pickled into the graph once).
    image : dask array (or numpy/zarr array) of shape (C, Y, X) or (C, Z, Y, X)
        The normalised image, channel first.
    tile_shape, overlap, blend
        As for :func:`~.predict.predict_tiled`.
    batch_size : int, optional
        Tiles per task (one forward pass). Default 1: the most parallel graph; ``None``
        picks the in-process default (fewer, larger tasks, better on a GPU worker).
    device : str
        Compute device, resolved on the worker that runs the tiles (``"auto"``: its GPU if
        it has one).
    remote_model : distributed.Future, optional
        ``model`` already on the cluster (``client.scatter(model, broadcast=True)``): the graph
        refers to it instead of carrying a pickled copy.

    Returns
    -------
    dask.array.Array of shape (K, Y, X) or (K, Z, Y, X), float32
    """
    import dask
    import dask.array as da

    check_model(model)
    check_image(model, image)
    if not isinstance(image, da.Array):
        image = da.from_array(image, chunks=image.shape)
    plan = plan_tiles(model, image.shape[1:], tile_shape=tile_shape, overlap=overlap, blend=blend)
    batch_size = check_batch_size(batch_size, plan)
    resolve_device(device)  # fail early on a bad name
    shipped = model if remote_model is None else remote_model
    net = dask.delayed(_prepare, pure=True)(shipped, str(device))
    shape = (model.num_classes, *plan.out_shape)
    all_tiles = list(plan.tiles())
    tiles = {}
    for first in range(0, len(all_tiles), batch_size):
        batch = all_tiles[first : first + batch_size]
        inputs = []
        for tile in batch:
            box, local = _box(tile.input_window, image.shape[1:])
            inputs.append((image[(slice(None), *box)], local, _weights_1d(plan, tile.index)))
        task = dask.delayed(_predict_batch, pure=True)(net, inputs)
        for j, tile in enumerate(batch):
            part = da.from_delayed(task, shape=(len(batch), *shape), dtype=np.float32)
            tiles[tile.index] = part[j]
    return da.block(_cells(plan, tiles))


def _prepare(model: UNet, device: str) -> Any:
    return inference_model(model, resolve_device(device))


def _box(window, spatial) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """The in-image bounding box of a window and the reflected indices inside it."""
    index = [reflect_index(lo, hi, n) for (lo, hi), n in zip(window, spatial)]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
    return box, [i - s.start for i, s in zip(index, box)]


def _weights_1d(plan: TilePlan, index: tuple[int, ...]) -> list[np.ndarray]:
    """The tile's 1-D weights per axis (their outer product is built in the task)."""
    return [w[k] for w, k in zip(plan.axis_weights, index)]


def _predict_batch(net: UNet, inputs: list) -> np.ndarray:
    """Weighted probabilities ``(B, K, *out)`` of a batch of tiles, each given as its input's
    bounding box, the reflected indices inside it, and its 1-D weights."""
    x = np.stack([_tile_input(block, local) for block, local, _ in inputs])
    probs = forward_probabilities(net, x, next(net.parameters()).device)
    for p, (_, _, weights_1d) in zip(probs, inputs):
        weight = weights_1d[0]
        for w in weights_1d[1:]:
            weight = np.multiply.outer(weight, w)
        p *= weight
    return probs


def _tile_input(block: np.ndarray, local: list[np.ndarray]) -> np.ndarray:
    x = np.asarray(block)[np.ix_(np.arange(block.shape[0]), *local)]
    return check_tile(x.astype(np.float32, copy=False))


def _axis_cells(axis: AxisPlan, weights: np.ndarray) -> list[tuple[int, int, list[int]]]:
    """``(lo, hi, tiles)`` for each cell along an axis: its pixels and the tiles covering it."""
    support = []
    for k, start in enumerate(axis.starts):
        nz = np.flatnonzero(weights[k])
        support.append((start + int(nz[0]), start + int(nz[-1]) + 1) if nz.size else (0, 0))
    edges = sorted({0, axis.size} | {e for s in support for e in s if 0 < e < axis.size})
    return [
        (lo, hi, [k for k, (a, b) in enumerate(support) if a <= lo and hi <= b])
        for lo, hi in itertools.pairwise(edges)
    ]


def _cells(plan: TilePlan, tiles: dict) -> Any:
    """Nested lists (one level per spatial axis) of the cells' dask arrays."""
    per_axis = [_axis_cells(a, w) for a, w in zip(plan.axes, plan.axis_weights)]

    def build(axis: int, prefix: tuple) -> Any:
        if axis < len(per_axis):
            return [build(axis + 1, (*prefix, cell)) for cell in per_axis[axis]]
        parts = []
        for index in itertools.product(*(cell[2] for cell in prefix)):
            src = tuple(
                slice(lo - start, hi - start)
                for (lo, hi, _), start in zip(
                    prefix, (a.starts[i] for a, i in zip(plan.axes, index))
                )
            )
            parts.append(tiles[index][(slice(None), *src)])
        return functools.reduce(operator.add, parts)

    return build(0, ())
