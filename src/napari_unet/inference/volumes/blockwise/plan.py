"""Blocks over a (Z, Y, X) volume: cores that tile it, each read with a halo around it.

A :class:`BlockPlan` is data: the cores tile the volume without overlap (each voxel's label
comes from exactly one block), and each block's *outer* window is its core grown by the
halo (clipped to the volume), its start rounded down to the network's pooling grid so that
the planes a block predicts are cut at the same pixel phase as the whole volume's (a U-Net
with ``depth`` poolings is shift-invariant only by multiples of ``2 ** depth``).

The halo (:func:`block_halo`) is at least the network's receptive field
(:func:`napari_unet.model.receptive.receptive_field`) and twice the typical object diameter,
in XY pixels; in z it is that many XY pixels divided by ``z_factor`` (the z step in XY
pixels), plus one slice for the linear z resampling of the ZX and ZY planes. Inside the
core, the probabilities then equal those of the whole volume (every input voxel the network
could see is in the window) and every object that reaches the core lies whole in the window.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from ....common.errors import UserInputError

__all__ = [
    "BYTES_PER_VOXEL",
    "Block",
    "BlockPlan",
    "block_from_text",
    "block_halo",
    "check_block",
    "default_block",
    "plan_blocks",
    "plane_below",
    "read_factor",
]

#: peak bytes per voxel of a block's outer window while it is segmented (the normalised
#: window, three-orientation sums, labels and the chunked 3D watershed: 57 measured on an
#: 8 M-voxel block of noise, the worst case for the watershed; 65 on a 39 M-voxel block of
#: synthetic nuclei, two chunks post-processed at once)
BYTES_PER_VOXEL = 65
#: share of the free memory one block may use by default, and at most this many bytes
MEMORY_SHARE, MAX_BLOCK_BYTES = 0.5, 8e9
#: a default block's core is at least this many voxels along each axis (where the volume is)
MIN_CORE = 16

Slices = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Block:
    """One block: its place in the block grid, its core and its outer (read) window.

    Attributes
    ----------
    grid : (i, j, k)
        Position in the block grid (z, y, x).
    core, outer : tuple of 3 slices
        Voxels of the volume the block labels, and the voxels it reads (core + halo).
    """

    grid: tuple[int, int, int]
    core: Slices
    outer: Slices

    @property
    def inner(self) -> Slices:
        """The core, relative to the outer window."""
        return tuple(
            slice(c.start - o.start, c.stop - o.start) for c, o in zip(self.core, self.outer)
        )  # type: ignore[return-value]

    @property
    def outer_voxels(self) -> int:
        return math.prod(s.stop - s.start for s in self.outer)


@dataclass(frozen=True)
class BlockPlan:
    """The blocks of a volume of ``shape``: cores of ``block`` voxels, read with ``halo``."""

    shape: tuple[int, int, int]
    block: tuple[int, int, int]
    halo: tuple[int, int, int]
    blocks: tuple[Block, ...]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block))  # type: ignore[return-value]

    def max_outer_voxels(self) -> int:
        return max(b.outer_voxels for b in self.blocks)

    def below(self, block: Block) -> list[tuple[int, Block]]:
        """The neighbours sharing ``block``'s low face along each axis: ``(axis, block)``."""
        grid = self.grid_shape
        found = []
        for axis in range(3):
            if block.grid[axis] == 0:
                continue
            pos = list(block.grid)
            pos[axis] -= 1
            found.append((axis, self.blocks[_flat(pos, grid)]))
        return found


def plane_below(region: Slices, axis: int) -> Slices:
    """The plane just below ``region`` along ``axis``: the last plane of the neighbour's core
    there (where two blocks' ids are compared)."""
    face = list(region)
    face[axis] = slice(region[axis].start - 1, region[axis].start)
    return tuple(face)  # type: ignore[return-value]


def _flat(pos: Sequence[int], grid: Sequence[int]) -> int:
    return (pos[0] * grid[1] + pos[1]) * grid[2] + pos[2]


def plan_blocks(
    shape: Sequence[int],
    block: Sequence[int],
    halo: Sequence[int],
    align: Sequence[int] = (1, 1, 1),
) -> BlockPlan:
    """Plan the blocks of a volume (raster order, z slowest).

    Parameters
    ----------
    shape : (Z, Y, X)
        The volume's shape.
    block : (Z, Y, X)
        The core size in voxels (clipped to ``shape``).
    halo : (Z, Y, X)
        Voxels read on each side of a core (clipped to the volume; at least 1, the plane
        where neighbouring blocks' ids are compared).
    align : (Z, Y, X)
        Outer windows start at multiples of these (the pooling grid of the network).

    Returns
    -------
    BlockPlan
    """
    shape = tuple(int(n) for n in shape)
    block = tuple(min(int(b), n) for b, n in zip(block, shape))
    halo = tuple(max(int(h), 1) for h in halo)  # at least the skin plane below a core
    axes = []
    for n, b, h, g in zip(shape, block, halo, align):
        spans = []
        for start in range(0, n, b):
            stop = min(start + b, n)
            lo = max(start - h, 0) // g * g
            spans.append((slice(start, stop), slice(lo, min(stop + h, n))))
        axes.append(spans)
    blocks = tuple(
        Block(grid=grid, core=(sz[0], sy[0], sx[0]), outer=(sz[1], sy[1], sx[1]))
        for grid, (sz, sy, sx) in zip(
            itertools.product(*(range(len(a)) for a in axes)), itertools.product(*axes)
        )
    )
    return BlockPlan(shape, block, halo, blocks)  # type: ignore[arg-type]


def block_halo(model, z_factor: float, diameter: float | None = None) -> tuple[int, int, int]:
    """Voxels of context on each side of a block's core, per axis (Z, Y, X).

    Parameters
    ----------
    model : UNet
        The 2D model; its receptive field sets the least XY halo.
    z_factor : float
        XY pixels per z step in the image the model sees.
    diameter : float, optional
        The typical object diameter in XY pixels (default: the model card's
        ``object_diameter``, else none).

    Returns
    -------
    (hz, hy, hx) : tuple of int
        ``hy = hx = max(receptive field, 2 * diameter)``; ``hz = ceil(hy / z_factor) + 1``.
    """
    from ....model.receptive import receptive_field
    from ....model.unet import UNet

    field = receptive_field(model)[-1] if isinstance(model, UNet) else 0
    if diameter is None:
        diameter = (getattr(model, "card", None) or {}).get("object_diameter")
    xy = max(int(field), math.ceil(2 * float(diameter or 0)), 1)
    return (math.ceil(xy / z_factor) + 1, xy, xy)


def pooling_align(model, z_factor: float) -> tuple[int, int, int]:
    """Where outer windows may start (Z, Y, X): multiples of the network's pooling grid.

    In z the grid is in the resampled rows of the ZX / ZY planes: the smallest number of
    slices that spans a whole number of grid cells there (the grid itself when none does).
    """
    depth = getattr(getattr(model, "config", None), "depth", 0)
    g = 2 ** int(depth)
    z = g
    for n in range(1, 4 * g + 1):
        rows = n * z_factor / g
        if abs(rows - round(rows)) < 1e-6:
            z = n
            break
    return (z, g, g)


def check_block(block) -> tuple[int, int, int] | None:
    """``block`` as three positive ints (Z, Y, X), or ``None``; a clear error otherwise."""
    if block is None:
        return None
    try:
        values = tuple(block)
    except TypeError:
        values = ()
    ok = len(values) == 3 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in values
    )
    if not ok:
        raise UserInputError(
            f"block must be three positive numbers of voxels (Z, Y, X), e.g. (64, 512, 512), "
            f"got {block!r}"
        )
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def block_from_text(text: str | None) -> tuple[int, int, int] | None:
    """A block typed as ``"Z Y X"`` (spaces, commas or x between), ``None`` when empty."""
    words = (text or "").replace(",", " ").replace("x", " ").split()
    if not words:
        return None
    try:
        values = tuple(int(w) for w in words)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise UserInputError(
            f"Block must be three positive numbers of voxels, Z Y X (e.g. 64 512 512), or "
            f"empty for automatic; got {text!r}"
        )
    return values  # type: ignore[return-value]


def default_block(
    shape: Sequence[int],
    halo: Sequence[int],
    z_factor: float,
    chunks: Sequence[int] | None = None,
    budget: float | None = None,
) -> tuple[int, int, int]:
    """The block (Z, Y, X) that reads the fewest voxels while its outer window fits ``budget``.

    Every block reads its core and its halo, so smaller blocks read more (``read_factor``).
    For each core depth (the whole stack, its halves, thirds...) the widest square core whose
    window fits is found, and the block that reads least is kept; its sides are then rounded
    down to whole ``chunks`` of the input where that keeps three quarters of them. The whole
    volume when it fits. ``budget``: default :data:`MEMORY_SHARE` of the free memory, at most
    :data:`MAX_BLOCK_BYTES`. ``z_factor`` is unused (the halo already carries it).
    """
    shape = tuple(int(n) for n in shape)
    if budget is None:
        budget = _default_budget()
    voxels = budget / BYTES_PER_VOXEL
    if math.prod(shape) <= voxels:
        return shape  # type: ignore[return-value]

    def widest(z: int) -> tuple[int, int, int]:
        lo, hi = 1, max(shape[1], shape[2])
        while lo < hi:  # the widest XY edge whose outer window fits
            mid = (lo + hi + 1) // 2
            core = (z, min(mid, shape[1]), min(mid, shape[2]))
            fits = math.prod(min(c + 2 * h, n) for c, h, n in zip(core, halo, shape)) <= voxels
            lo, hi = (mid, hi) if fits else (lo, mid - 1)
        return (z, min(max(lo, MIN_CORE), shape[1]), min(max(lo, MIN_CORE), shape[2]))

    depths = {max(1, -(-shape[0] // k)) for k in range(1, shape[0] + 1)}
    candidates = [widest(z) for z in sorted(depths) if z >= min(MIN_CORE, shape[0])]
    best = min(candidates, key=lambda c: (read_factor(shape, c, halo), -math.prod(c)))
    if chunks is not None:
        best = tuple(_whole_chunks(b, c) for b, c in zip(best, chunks))
    return best  # type: ignore[return-value]


def read_factor(shape: Sequence[int], block: Sequence[int], halo: Sequence[int]) -> float:
    """Voxels all blocks' outer windows read, per voxel of the volume (1: no halo)."""
    factor = 1.0
    for n, b, h in zip(shape, block, halo):
        b = min(int(b), n)
        read = sum(min(s + b + h, n) - max(s - h, 0) for s in range(0, n, b))
        factor *= read / n
    return factor


def _whole_chunks(size: int, chunk: int) -> int:
    """``size`` rounded down to whole chunks, unless that loses more than a quarter of it."""
    whole = size // chunk * chunk
    return whole if whole >= 0.75 * size else size


def _default_budget() -> float:
    from ....common.device import available_memory

    free = available_memory()
    return MAX_BLOCK_BYTES if free is None else min(MEMORY_SHARE * free, MAX_BLOCK_BYTES)
