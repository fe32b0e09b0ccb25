"""The receptive field of a :class:`~napari_unet.model.unet.UNet`, computed from its architecture.

The halo of a network is the number of input pixels, on each side of an output pixel, that can
change its value. Tiles that overlap by at least ``2 * halo`` pixels (``padding="same"``) give
the same probabilities as one forward pass over the whole image: every pixel that a tile keeps
is at least ``halo`` pixels from the tile's inner borders, so it never sees the zero padding
of the tile's convolutions.

Notes
-----
Each output pixel of a layer depends on an interval ``[origin + a, origin + b]`` of input
pixels, where ``origin = jump * index`` and ``jump`` is the layer's stride in input pixels.
Walking the U-Net in order:

* a 3x3 convolution at jump ``J``: ``a -= J``, ``b += J``;
* a 2x2 max-pooling at jump ``J``: ``b += J`` and the jump doubles;
* a stride-2, 2x2 transposed convolution from jump ``J``: ``a -= J / 2`` and the jump halves
  (output pixel ``2i + 1`` reads input pixel ``i``);
* concatenation with a skip connection takes the union of the two intervals.

The halo is ``max(-a, b)``. For a depth-4 U-Net it is 107 pixels (a 215 px field); the
``padding="valid"`` net of the paper loses 92 of them per side, which is why its 572 px input
gives a 388 px output.
"""

from __future__ import annotations

from .unet import UNet


def receptive_halo_1d(depth: int) -> int:
    """The halo (pixels on each side) of a U-Net with ``depth`` poolings, along one axis."""
    lo, hi, jump = 0, 0, 1
    skips: list[tuple[int, int]] = []
    for _ in range(depth):
        lo, hi = lo - 2 * jump, hi + 2 * jump  # two 3x3 convolutions
        skips.append((lo, hi))
        hi += jump  # 2x2 max-pooling
        jump *= 2
    lo, hi = lo - 2 * jump, hi + 2 * jump  # bottleneck
    for skip_lo, skip_hi in reversed(skips):
        jump //= 2
        lo -= jump  # 2x2 transposed convolution
        lo, hi = min(lo, skip_lo), max(hi, skip_hi)  # concatenation
        lo, hi = lo - 2 * jump, hi + 2 * jump  # two 3x3 convolutions
    return max(-lo, hi)


def receptive_field(model: UNet) -> tuple[int, ...]:
    """The halo of ``model``: input pixels on EACH side of an output pixel that affect it.

    Parameters
    ----------
    model : UNet
        The network.

    Returns
    -------
    tuple of int, one per spatial axis
        ``h`` such that output pixel ``i`` depends only on input pixels ``i - h .. i + h``
        (the full receptive field is ``2 * h + 1`` pixels wide).

    Notes
    -----
    For ``padding="same"`` networks, tiled inference equals whole-image inference (to float
    rounding) when neighbouring tiles overlap by at least ``2 * h`` pixels. ``padding="valid"``
    networks never see padding, so any overlap is exact; ``h`` is still reported.
    See the module docstring for the computation.

    Examples
    --------
    >>> receptive_field(UNet(depth=4))
    (107, 107)
    """
    if not isinstance(model, UNet):
        raise TypeError(f"receptive_field needs a napari_unet UNet, got {type(model).__name__}")
    return (receptive_halo_1d(model.config.depth),) * model.ndim
