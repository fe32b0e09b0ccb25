"""The tile plan: where the tiles of an N-D image go, as plain data, and how they are blended.

A plan is made per spatial axis (:class:`AxisPlan`) and the N-D tiles are the Cartesian
product of the axes' tiles (:class:`TilePlan`). All coordinates are in pixels of the image.

Along one axis of length ``size``, tile ``k`` reads input pixels
``starts[k] - margin .. starts[k] - margin + tile`` (reflect-padded where they fall outside the
image) and predicts output pixels ``starts[k] .. starts[k] + out``. ``margin`` is 0 for
``padding="same"`` networks and ``(tile - out) / 2`` for ``padding="valid"`` ones. Every start
is a multiple of ``2**depth``, so each tile sees the same pooling grid as a whole-image forward
pass; the last tile may run past the end of the image (the padding is cropped away).

Blending: each tile's output gets a weight per pixel, the product of one 1-D weight per axis,
normalised so that the weights of all tiles sum to 1 at every pixel. The ``trim`` outermost
pixels at the inner borders of a tile (those that see the tile's zero padding) get weight 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...common.errors import ShapeError, UserInputError
from ...model.receptive import receptive_field
from ...model.unet import UNet

BLENDS = ("gaussian", "linear", "crop")
#: largest default tile side (input pixels) for 2D and 3D networks
MAX_TILE = {2: 1088, 3: 112}
#: largest default overlap (pixels) for 2D and 3D networks
MAX_OVERLAP = {2: 32, 3: 16}
#: pixels (voxels) per batch that the default batch size aims at
BATCH_PIXELS = {2: 512 * 512, 3: 112**3}
_GAUSSIAN_SIGMA = 0.125  # of the tile's output length, as in nnU-Net and MONAI


@dataclass(frozen=True)
class AxisPlan:
    """The tiles along one spatial axis.

    Attributes
    ----------
    size : int
        Length of the image along this axis.
    tile, out : int
        Input and output length of a tile.
    margin : int
        ``(tile - out) // 2``: input pixels a ``"valid"`` network loses on each side.
    starts : tuple of int
        First output pixel of each tile (multiples of the network's ``2**depth``).
    trim : int
        Pixels at each inner tile border that get weight 0 when blending.
    """

    size: int
    tile: int
    out: int
    margin: int
    starts: tuple[int, ...]
    trim: int

    @property
    def n_tiles(self) -> int:
        return len(self.starts)

    @property
    def overlaps(self) -> tuple[int, ...]:
        """Output pixels shared by each pair of neighbouring tiles."""
        return tuple(a + self.out - b for a, b in zip(self.starts, self.starts[1:]))

    def input_window(self, k: int) -> tuple[int, int]:
        """Input pixels ``[lo, hi)`` read by tile ``k``; may reach outside ``[0, size)``."""
        lo = self.starts[k] - self.margin
        return lo, lo + self.tile

    def output_window(self, k: int) -> tuple[int, int, int]:
        """``(lo, hi, offset)``: tile ``k`` writes image pixels ``[lo, hi)`` from its own
        output pixels ``[lo - offset, hi - offset)`` (the part inside the image)."""
        start = self.starts[k]
        return start, min(start + self.out, self.size), start

    def weights(self, blend: str) -> np.ndarray:
        """Normalised blending weights of shape ``(n_tiles, out)``; they sum to 1 over tiles."""
        raw = np.stack([self._raw_weight(k, blend) for k in range(self.n_tiles)])
        total = np.zeros(self.starts[-1] + self.out, dtype=np.float64)
        for k, start in enumerate(self.starts):
            total[start : start + self.out] += raw[k]
        for k, start in enumerate(self.starts):
            t = total[start : start + self.out]
            raw[k] = np.divide(raw[k], t, out=np.zeros_like(t), where=t > 0)
        return raw.astype(np.float32)

    def _support(self, k: int) -> tuple[int, int]:
        """Tile-local pixels ``[lo, hi)`` that may get a non-zero weight."""
        lo = self.trim if k > 0 else 0
        hi = self.out - self.trim if k < self.n_tiles - 1 else self.out
        return lo, hi

    def _raw_weight(self, k: int, blend: str) -> np.ndarray:
        x = np.arange(self.out, dtype=np.float64)
        lo, hi = self._support(k)
        if blend == "crop":
            if k > 0:  # cut in the middle of the overlap with the previous tile
                lo = (self.starts[k - 1] + self.out + self.starts[k]) // 2 - self.starts[k]
            if k < self.n_tiles - 1:
                hi = (self.starts[k] + self.out + self.starts[k + 1]) // 2 - self.starts[k]
            w = np.ones(self.out)
        elif blend == "linear":
            w = np.ones(self.out)
            if k > 0:  # ramp across the part shared with the previous tile's support
                ramp = self.starts[k - 1] + self._support(k - 1)[1] - self.starts[k] - lo
                w = np.minimum(w, (x - lo + 0.5) / max(ramp, 1))
            if k < self.n_tiles - 1:
                ramp = self.starts[k] + hi - self.starts[k + 1] - self._support(k + 1)[0]
                w = np.minimum(w, (hi - x - 0.5) / max(ramp, 1))
            w = np.clip(w, 1e-6, 1.0)
        else:  # gaussian
            sigma = _GAUSSIAN_SIGMA * self.out
            w = np.exp(-0.5 * ((x - (self.out - 1) / 2) / sigma) ** 2)
        w[:lo] = 0
        w[hi:] = 0
        return w


@dataclass(frozen=True)
class Tile:
    """One N-D tile: its index in the grid and its input/output windows per axis."""

    index: tuple[int, ...]
    input_window: tuple[tuple[int, int], ...]
    output_window: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class TilePlan:
    """The tiles of an N-D image: one :class:`AxisPlan` per spatial axis, and the blend."""

    axes: tuple[AxisPlan, ...]
    blend: str = "gaussian"

    @property
    def shape(self) -> tuple[int, ...]:
        """The image's spatial shape."""
        return tuple(a.size for a in self.axes)

    @property
    def tile_shape(self) -> tuple[int, ...]:
        return tuple(a.tile for a in self.axes)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(a.out for a in self.axes)

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of tiles along each axis."""
        return tuple(a.n_tiles for a in self.axes)

    @property
    def n_tiles(self) -> int:
        return math.prod(self.grid)

    def tiles(self) -> Iterator[Tile]:
        """All tiles in C order (last axis fastest)."""
        for index in itertools.product(*(range(n) for n in self.grid)):
            yield self.tile(index)

    def tile(self, index: tuple[int, ...]) -> Tile:
        return Tile(
            index=tuple(index),
            input_window=tuple(a.input_window(k) for a, k in zip(self.axes, index)),
            output_window=tuple(a.output_window(k) for a, k in zip(self.axes, index)),
        )

    @cached_property
    def axis_weights(self) -> tuple[np.ndarray, ...]:
        """Per axis, the normalised 1-D weights of shape ``(n_tiles, out)``."""
        return tuple(a.weights(self.blend) for a in self.axes)

    def weight(self, index: tuple[int, ...]) -> np.ndarray:
        """The N-D blending weight of tile ``index``, shape ``out_shape`` (float32)."""
        w = self.axis_weights[0][index[0]]
        for ws, k in zip(self.axis_weights[1:], index[1:]):
            w = np.multiply.outer(w, ws[k])
        return w


# -- making a plan -----------------------------------------------------------------------------
def plan_tiles(
    model: UNet,
    spatial_shape: Sequence[int],
    *,
    tile_shape: int | Sequence[int] | None = None,
    overlap: int | Sequence[int] | None = None,
    blend: str = "gaussian",
) -> TilePlan:
    """Plan the tiles of an image of shape ``spatial_shape`` for ``model``.

    Parameters
    ----------
    model : UNet
        The network; its ``depth`` and ``padding`` decide the valid tile sizes.
    spatial_shape : sequence of int
        ``(Y, X)`` or ``(Z, Y, X)``.
    tile_shape : int or sequence of int, optional
        Input size of a tile (an int for all axes). Each must be valid for the network
        (``model.check_input_shape``). Default: the fewest tiles of at most 1088 px (2D) or
        112 px (3D) per axis that cover the image, sized to the image (the number of tiles,
        not their size, drives the cost).
    overlap : int or sequence of int, optional
        Output pixels shared by neighbouring tiles (at least; starts are rounded to the
        pooling grid). Default: ``2 * receptive_field(model)`` capped at 32 px (2D) / 16 (3D)
        and at half a tile for ``"same"`` networks, 0 for ``"valid"`` ones (which never see
        padding).
    blend : {"gaussian", "linear", "crop"}
        How overlapping outputs are combined.

    Returns
    -------
    TilePlan
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    ndim = model.ndim
    if len(spatial_shape) != ndim or min(spatial_shape, default=0) < 1:
        raise ShapeError(
            f"this {ndim}D U-Net needs an image with {ndim} non-empty spatial axes, "
            f"got spatial shape {spatial_shape}"
        )
    if blend not in BLENDS:
        raise UserInputError(f"blend must be one of {BLENDS}, got {blend!r}")
    halos = receptive_field(model)
    overlaps = _per_axis("overlap", overlap, ndim, low=0)
    tiles = _per_axis("tile_shape", tile_shape, ndim, low=1)
    if tiles is not None:
        try:
            model.check_input_shape(tiles)
        except ShapeError as err:  # name the setting the user gave (--tile, tile_shape=)
            raise ShapeError(f"tile size {tiles} (--tile, tile_shape=): {err}") from None
    axes = []
    for axis, size in enumerate(spatial_shape):
        halo = halos[axis]
        same = model.config.padding == "same"
        if overlaps is not None:
            ov = overlaps[axis]
        else:
            ov = min(2 * halo, MAX_OVERLAP[ndim]) if same else 0
        tile = tiles[axis] if tiles is not None else _default_tile(model, size, ov, MAX_TILE[ndim])
        if tiles is not None and tile > MAX_TILE[ndim]:  # e.g. --tile 1000000000: not the memory
            tile = min(tile, max(_smallest_tile_with_output(model, size), MAX_TILE[ndim]))
        if overlaps is None:  # at most half a tile
            ov = min(ov, int(model.output_size(tile)) // 2)
        trim = 0 if not same else (halo if ov >= 2 * halo else ov // 4)
        axes.append(_axis_plan(model, axis, size, tile, ov, trim))
    return TilePlan(axes=tuple(axes), blend=blend)


def default_batch_size(plan: TilePlan) -> int:
    """Tiles per batch: about 512x512 px (2D) or 112^3 voxels (3D) per batch, at most 16."""
    budget = BATCH_PIXELS[len(plan.axes)]
    return int(min(16, max(1, budget // math.prod(plan.tile_shape)), plan.n_tiles))


def _per_axis(name: str, value: object, ndim: int, low: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    values = (value,) * ndim if isinstance(value, (int, np.integer)) else value
    try:
        values = tuple(values)  # type: ignore[arg-type]
    except TypeError:
        raise UserInputError(
            f"{name} must be an int or a sequence of {ndim} ints, got {value!r}"
        ) from None
    ok = len(values) == ndim and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low for v in values
    )
    if not ok:
        raise UserInputError(
            f"{name} must be an int >= {low} or a sequence of {ndim} such ints, got {value!r}"
        )
    return tuple(int(v) for v in values)


def _grid(model: UNet) -> int:
    return 2**model.config.depth


def _align_up(n: int, g: int) -> int:
    return -(-n // g) * g


def _n_tiles(model: UNet, size: int, tile: int, overlap: int) -> int | None:
    """Tiles needed along an axis, or None if ``overlap`` leaves no stride."""
    g, out = _grid(model), model.output_size(tile)
    stride = (out - overlap) // g * g
    last = _align_up(max(size - out, 0), g)
    if last == 0:
        return 1
    return None if stride < g else -(-last // stride) + 1


def _default_tile(model: UNet, size: int, overlap: int, max_tile: int) -> int:
    """The valid tile that covers ``size`` with the fewest tiles, sized to the image."""
    biggest = model.valid_sizes_near(max_tile)[0] or model.valid_sizes_near(max_tile)[1]
    need = _smallest_tile_with_output(model, size)
    if need <= biggest:
        return need
    fewest = _n_tiles(model, size, biggest, overlap)
    if fewest is None:  # the overlap is too large for the biggest tile: let _axis_plan explain
        return biggest
    target = -(-(size - overlap) // fewest) + overlap
    tile = _smallest_tile_with_output(model, target)
    while tile < biggest and _n_tiles(model, size, tile, overlap) != fewest:
        tile = model.valid_sizes_near(tile + 1)[1]
    return min(tile, biggest)


def _smallest_tile_with_output(model: UNet, length: int) -> int:
    """The smallest valid input size whose output is at least ``length`` pixels."""
    tile = model.valid_sizes_near(max(length, 1))[1]
    while model.output_size(tile) < length:
        tile = model.valid_sizes_near(tile + 1)[1]
    return tile


def _axis_plan(model: UNet, axis: int, size: int, tile: int, overlap: int, trim: int) -> AxisPlan:
    g, out = _grid(model), int(model.output_size(tile))
    stride = (out - overlap) // g * g
    last = _align_up(max(size - out, 0), g)
    if last > 0 and stride < g:
        raise UserInputError(
            f"overlap {overlap} along spatial axis {axis} is too large for tiles of {tile} px "
            f"(output {out} px); use an overlap of at most {max(out - g, 0)} or a larger tile"
        )
    if last == 0:
        starts: tuple[int, ...] = (0,)
    else:
        k = -(-last // stride) + 1
        starts = (*tuple(int(i * last // (k - 1) // g * g) for i in range(k - 1)), last)
    return AxisPlan(
        size=size, tile=tile, out=out, margin=(tile - out) // 2, starts=starts, trim=trim
    )
