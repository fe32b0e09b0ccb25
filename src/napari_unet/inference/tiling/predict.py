"""Tiled inference: class probabilities of an image of any size, tile by tile.

The engine plans the tiles as data (:mod:`.tile_plan`), reads each tile (reflect-padding where
it runs past the image), runs the tiles in batches on the compute device, and blends the
outputs into the result, which may live elsewhere (a numpy array or a zarr array written tile
by tile). Three faces share it:

* :func:`predict_tiled_iter` - a generator that yields :class:`TileProgress` after each batch
  and returns the probabilities; closing it stops the work within one batch;
* :func:`predict_tiled` - the same, run to the end;
* :func:`predict_tiled_dask` - a lazy dask array whose tasks are the tiles, so the same
  computation runs on a dask.distributed cluster.

Seamless: for ``padding="same"`` networks, with an overlap of at least
``2 * receptive_field(model)`` the result equals one forward pass over the whole image (when
the image's size is valid for the network) to float rounding, whatever the blend.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...common.device import resolve_device
from ...common.errors import Cancelled, ShapeError, UserInputError
from ...common.progress import run_to_end
from ...model.receptive import receptive_field
from ...model.unet import UNet
from ..backends.engines import engine_runner, resolve_engine
from .tile_plan import TilePlan, plan_tiles
from .tiles import IntOrSeq, check_batch_size, check_image, check_model, read_window

__all__ = [
    "TileProgress",
    "predict_tiled",
    "predict_tiled_dask",
    "predict_tiled_iter",
    "receptive_field",
]


@dataclass(frozen=True)
class TileProgress:
    """Progress of a tiled prediction: ``done`` of ``total`` tiles are finished."""

    done: int
    total: int


def predict_tiled_iter(
    model: UNet,
    image: Any,
    *,
    tile_shape: IntOrSeq = None,
    overlap: IntOrSeq = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    blend: str = "gaussian",
    out: Any = None,
    engine: str = "auto",
    stop: threading.Event | None = None,
    tta: bool = False,
) -> Generator[TileProgress, None, Any]:
    """Predict class probabilities tile by tile, yielding progress after each batch.

    Parameters
    ----------
    model : UNet
        The network (left unchanged: the engine runs an eval-mode copy with batch norm folded).
    image : array of shape (C, Y, X) or (C, Z, Y, X)
        The normalised image, channel first: a numpy, dask or zarr array (any real dtype; read
        tile by tile, so a zarr or dask image is never loaded whole).
    tile_shape : int or sequence of int, optional
        Input size of a tile per spatial axis, valid for the network. Default: the fewest
        tiles of at most 1088 px (2D) / 112 px (3D) per axis, sized to the image.
    overlap : int or sequence of int, optional
        Pixels by which neighbouring tiles overlap (at least; tile starts are rounded to the
        network's pooling grid). Default: ``2 * receptive_field(model)`` (exact) capped at
        32 px (2D) / 16 px (3D) and half a tile; the blending hides the rest.
    batch_size : int, optional
        Tiles per forward pass. Default: about 512x512 px (2D) / 112^3 (3D) per batch.
    device : str or torch.device
        Compute device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``. The output stays in
        host memory (or in ``out``).
    blend : {"gaussian", "linear", "crop"}
        How overlapping tiles are combined: a Gaussian or linear taper, or a hard cut in the
        middle of the overlap. The pixels at a tile's inner border that see its zero padding
        get no weight.
    out : numpy or zarr array of shape (K, Y, X) or (K, Z, Y, X), optional
        Where to write the probabilities (it is zeroed first; each batch adds its tiles'
        weighted probabilities to their region, so a zarr ``out`` is written tile by tile).
        Default: a new numpy array. A run closed early leaves a partial result in it.
    engine : {"auto", "torch", "openvino", "onnxruntime"}
        What runs the network (see :mod:`..backends.engines`): ``"auto"`` picks the fastest
        installed engine verified for this model (on the CPU, for images of at least 1 MPix or
        models already exported; otherwise torch). All give the same probabilities within 1e-4.
    stop : threading.Event, optional
        Set from another thread to cancel at once, inside a batch rather than after it (a
        batch of large tiles takes seconds on a CPU): the batch in flight is dropped, one
        last event is yielded, and resuming the generator then raises :class:`Cancelled`.
        Set it together with closing the generator (napari's ``worker.quit()``).
    tta : bool
        Test-time augmentation: each tile's probabilities are the mean over its flips and
        90-degree rotations (8 views of a square 2D tile, 4 flips of another 2D tile, 8 flips
        of a 3D tile), mapped back, as Cellpose's ``augment`` and nnU-Net's mirroring do.
        Costs as many forward passes.

    Yields
    ------
    TileProgress
        After each batch.

    Returns
    -------
    probabilities : array of shape (K, Y, X) or (K, Z, Y, X), float32
        Softmax over the ``K`` classes (sigmoid when ``K == 1``); ``out`` if given.

    Raises
    ------
    ShapeError
        ``image`` has the wrong number of axes or channels, or ``out`` the wrong shape.
    Cancelled
        Resumed after ``stop`` was set.
    UserInputError
        A bad ``tile_shape``, ``overlap``, ``batch_size``, ``blend``, ``device`` or
        ``engine``, or an image with NaN or inf (found when its tile is read).
    """
    check_model(model)
    check_image(model, image)
    plan = plan_tiles(model, image.shape[1:], tile_shape=tile_shape, overlap=overlap, blend=blend)
    batch_size = check_batch_size(batch_size, plan)
    dev = resolve_device(device)
    engine = resolve_engine(engine, model, dev, pixels=math.prod(image.shape[1:]))
    out = _prepare_out(out, (model.num_classes, *plan.shape))
    return _run(model, image, plan, batch_size, (engine, dev), out, stop, tta)


def predict_tiled(
    model: UNet,
    image: Any,
    *,
    tile_shape: IntOrSeq = None,
    overlap: IntOrSeq = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    blend: str = "gaussian",
    out: Any = None,
    engine: str = "auto",
) -> Any:
    """Class probabilities of ``image``, by tiled inference; see :func:`predict_tiled_iter`.

    A numpy or zarr image gives a numpy result (or fills ``out``). A dask image is computed
    tile by tile, streaming (each tile's input is computed when the tile runs), into numpy
    or ``out``; use :func:`predict_tiled_dask` for a lazy result that runs on a cluster.

    Returns
    -------
    probabilities : array of shape (K, Y, X) or (K, Z, Y, X), float32
    """
    gen = predict_tiled_iter(
        model,
        image,
        tile_shape=tile_shape,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        blend=blend,
        out=out,
        engine=engine,
    )
    return run_to_end(gen)


def _run(
    model: UNet,
    image: Any,
    plan: TilePlan,
    batch_size: int,
    engine: tuple[str, torch.device],
    out: Any,
    stop: threading.Event | None = None,
    tta: bool = False,
) -> Generator[TileProgress, None, Any]:
    forward = engine_runner(model, *engine)
    if tta:
        forward = augmented(forward, plan.tile_shape)
    tiles = list(plan.tiles())
    for first in range(0, len(tiles), batch_size):
        batch = tiles[first : first + batch_size]
        x = np.stack([read_window(image, t.input_window) for t in batch])
        probs = forward(x, stop) if stop is not None else forward(x)
        if probs is None:  # stopped inside the batch: its tiles are dropped
            yield TileProgress(done=first, total=len(tiles))
            raise Cancelled("the prediction was cancelled")
        for tile, p in zip(batch, probs):
            _accumulate(out, p, plan.weight(tile.index), tile.output_window)
        yield TileProgress(done=first + len(batch), total=len(tiles))
    return out


def views(tile_shape: tuple[int, ...]) -> list[tuple[int, tuple[int, ...]]]:
    """The test-time views of a tile: ``(quarter turns in the last two axes, flipped axes)``.

    Axes count from the end of a batch ``(N, C, *spatial)``: -1 is X. A square 2D tile gets
    the 8 symmetries of the square, another 2D tile its 4 flips, a 3D tile its 8 flips.
    """
    import itertools

    axes = tuple(range(-1, -len(tile_shape) - 1, -1))
    flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    turns = (0, 1) if len(tile_shape) == 2 and tile_shape[0] == tile_shape[1] else (0,)
    return [(k, f) for k in turns for f in flips]


def augmented(forward, tile_shape: tuple[int, ...]):
    """``forward`` averaged over the test-time :func:`views` of each tile, mapped back."""
    chosen = views(tile_shape)

    def run(x: np.ndarray, *stop):
        total = None
        for turns, flips in chosen:
            seen = np.rot90(np.flip(x, flips) if flips else x, turns, axes=(-2, -1))
            probs = forward(np.ascontiguousarray(seen), *stop)
            if probs is None:  # stopped inside the batch
                return None
            back = np.rot90(np.asarray(probs), -turns, axes=(-2, -1))
            back = np.flip(back, flips) if flips else back
            total = back.astype(np.float32) if total is None else total + back
        return total / len(chosen)

    return run


def _accumulate(out: Any, probs: np.ndarray, weight: np.ndarray, window) -> None:
    """Add ``probs * weight`` (the part inside the image) to ``out``."""
    dst = (slice(None), *(slice(lo, hi) for lo, hi, _ in window))
    src = (slice(None), *(slice(lo - off, hi - off) for lo, hi, off in window))
    contribution = probs[src] * weight[src[1:]]
    if isinstance(out, np.ndarray):
        out[dst] += contribution
    else:  # zarr: read-modify-write of this tile's region only
        out[dst] = np.asarray(out[dst]) + contribution


def _prepare_out(out: Any, shape: tuple[int, ...]) -> Any:
    if out is None:
        return np.zeros(shape, dtype=np.float32)
    if tuple(getattr(out, "shape", ())) != shape:
        raise ShapeError(
            f"out must have shape {shape} (classes first), got {tuple(getattr(out, 'shape', ()))}"
        )
    if np.dtype(out.dtype).kind != "f":
        raise UserInputError(f"out must be a float array, got dtype {out.dtype}")
    out[...] = 0
    return out


def predict_tiled_dask(
    model: UNet,
    image: Any,
    *,
    tile_shape: IntOrSeq = None,
    overlap: IntOrSeq = None,
    batch_size: int | None = 1,
    device: str = "auto",
    blend: str = "gaussian",
) -> Any:
    """Lazy class probabilities of a dask image, one dask task per tile (or batch of tiles).

    Same plan, blending and result as :func:`predict_tiled` (to float rounding), but as a
    ``dask.array.Array`` of shape ``(K, *spatial)``: nothing runs until it is computed, by
    any dask scheduler, including a ``dask.distributed`` cluster. Its chunks follow the tile
    plan (rechunk before ``to_zarr``). See :func:`.predict_dask.predict_tiled_dask`.
    """
    from .predict_dask import predict_tiled_dask as impl

    return impl(
        model,
        image,
        tile_shape=tile_shape,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        blend=blend,
    )
