"""The U-Net of Ronneberger et al. (2015), for 2D and 3D images.

Contracting path: blocks of two 3x3 convolutions (+ batch norm) + ReLU, then 2x2 max-pooling,
with the number of filters doubling per level. Expanding path: a stride-2 transposed
convolution, concatenation with the encoder features of the same level ("copy and crop"), and
two 3x3 convolutions. A 1x1 convolution maps to one logit per class.

With ``padding="valid"`` this is the paper's network: every 3x3 convolution loses one pixel at
each border, the skip features are centre-cropped before concatenation, and a 572x572 input
gives a 388x388 output. With ``padding="same"`` the output has the input's size, which must then
be divisible by ``2**depth`` along every spatial axis.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from ..common.errors import ShapeError, UserInputError

Padding = Literal["same", "valid"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_UP = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


@dataclass(frozen=True)
class UNetConfig:
    """The constructor arguments of :class:`UNet`, validated; stored in model files."""

    in_channels: int = 1
    num_classes: int = 2
    ndim: int = 2
    depth: int = 4
    base_filters: int = 16
    batch_norm: bool = True
    padding: Padding = "same"

    def __post_init__(self) -> None:
        _check_int("in_channels", self.in_channels, 1, 4096)
        _check_int("num_classes", self.num_classes, 1, 4096)
        _check_int("depth", self.depth, 0, 8)
        _check_int("base_filters", self.base_filters, 1, 4096)
        if self.ndim not in (2, 3):
            raise UserInputError(f"ndim must be 2 or 3, got {self.ndim!r}")
        if self.padding not in ("same", "valid"):
            raise UserInputError(f"padding must be 'same' or 'valid', got {self.padding!r}")
        if not isinstance(self.batch_norm, bool):
            raise UserInputError(f"batch_norm must be True or False, got {self.batch_norm!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserInputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by (batch norm and) ReLU."""

    def __init__(self, ndim: int, in_ch: int, out_ch: int, batch_norm: bool, padding: int):
        layers: dict[str, nn.Module] = {}
        for i, c_in in enumerate((in_ch, out_ch), start=1):
            layers[f"conv{i}"] = _CONV[ndim](c_in, out_ch, kernel_size=3, padding=padding)
            if batch_norm:
                layers[f"norm{i}"] = _NORM[ndim](out_ch)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
        super().__init__(OrderedDict(layers))


class UNet(nn.Module):
    """U-Net for 2D ``(N, C, Y, X)`` or 3D ``(N, C, Z, Y, X)`` images.

    Parameters
    ----------
    in_channels : int
        Number of input channels ``C``.
    num_classes : int
        Number of output classes ``K``; ``forward`` returns ``K`` logits per pixel.
    ndim : {2, 3}
        Number of spatial dimensions.
    depth : int
        Number of 2x2 poolings (4 in the paper). The network has ``depth + 1`` levels with
        ``base_filters * 2**level`` filters.
    base_filters : int
        Filters of the first level (64 in the paper, 16 in the small variant).
    batch_norm : bool
        Batch normalisation after each convolution.
    padding : {"same", "valid"}
        ``"same"`` keeps the spatial size; ``"valid"`` is the paper's unpadded network.

    Examples
    --------
    >>> net = UNet(in_channels=1, num_classes=2, depth=4, base_filters=64,
    ...            batch_norm=False, padding="valid")
    >>> net.output_shape((572, 572))
    (388, 388)
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        *,
        ndim: int = 2,
        depth: int = 4,
        base_filters: int = 16,
        batch_norm: bool = True,
        padding: Padding = "same",
    ) -> None:
        super().__init__()
        self.config = UNetConfig(
            in_channels, num_classes, ndim, depth, base_filters, batch_norm, padding
        )
        pad = 1 if padding == "same" else 0
        filters = [base_filters * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        c_in = in_channels
        for f in filters[:-1]:
            self.encoders.append(ConvBlock(ndim, c_in, f, batch_norm, pad))
            c_in = f
        self.pool = _POOL[ndim](kernel_size=2, stride=2)
        self.bottleneck = ConvBlock(ndim, c_in, filters[-1], batch_norm, pad)
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for f_low, f in zip(filters[:0:-1], filters[-2::-1]):
            self.upsamples.append(_UP[ndim](f_low, f, kernel_size=2, stride=2))
            self.decoders.append(ConvBlock(ndim, 2 * f, f, batch_norm, pad))
        self.head = _CONV[ndim](filters[0], num_classes, kernel_size=1)
        #: the model card (task, class names, normalisation, ...), set by load_model/training
        self.card: dict = {}

    # -- convenience accessors ------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return self.config.ndim

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    # -- shape contract --------------------------------------------------------------------
    def output_size(self, size: int) -> int | None:
        """Output length along one spatial axis for an input of length ``size``.

        Returns ``None`` when the network cannot take that length.
        """
        depth = self.config.depth
        if self.config.padding == "same":
            return size if size > 0 and size % 2**depth == 0 else None
        s = size
        for _ in range(depth):
            s -= 4
            if s <= 0 or s % 2:
                return None
            s //= 2
        s -= 4
        if s <= 0:
            return None
        for _ in range(depth):
            s = 2 * s - 4
            if s <= 0:
                return None
        return s

    def valid_sizes_near(self, size: int) -> tuple[int | None, int | None]:
        """The nearest input lengths at or below and at or above ``size`` that the net takes."""
        below = next((s for s in range(size, 0, -1) if self.output_size(s)), None)
        # valid sizes recur every 2**depth above the smallest one, so this search ends
        above = next(s for s in itertools.count(max(size, 1)) if self.output_size(s))
        return below, above

    def check_input_shape(self, spatial_shape: tuple[int, ...]) -> None:
        """Raise :class:`ShapeError` naming the nearest valid sizes if the shape is not valid."""
        if len(spatial_shape) != self.ndim:
            raise ShapeError(
                f"this {self.ndim}D U-Net needs {self.ndim} spatial axes, got shape {tuple(spatial_shape)}"
            )
        for axis, size in enumerate(spatial_shape):
            if self.output_size(int(size)) is None:
                below, above = self.valid_sizes_near(int(size))
                if below is None:
                    options = f"the smallest valid size is {above}"
                else:
                    options = f"the nearest valid sizes are {below} or {above}"
                raise ShapeError(
                    f"input size {size} along spatial axis {axis} is not valid for this U-Net "
                    f"(depth={self.config.depth}, padding={self.config.padding!r}); {options}"
                )

    def output_shape(self, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial shape of the output for an input of spatial shape ``spatial_shape``."""
        self.check_input_shape(tuple(spatial_shape))
        return tuple(int(self.output_size(int(s))) for s in spatial_shape)  # type: ignore[arg-type]

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, K, *out_spatial)`` for input ``(N, C, *spatial)``."""
        if x.ndim != self.ndim + 2:
            raise ShapeError(
                f"expected a {self.ndim + 2}D tensor (N, C, {'Z, ' if self.ndim == 3 else ''}Y, X), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ShapeError(
                f"this U-Net takes {self.in_channels} input channel(s), got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        self.check_input_shape(tuple(x.shape[2:]))
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.upsamples, self.decoders, reversed(skips)):
            x = up(x)
            x = decoder(torch.cat([center_crop(skip, x.shape[2:]), x], dim=1))
        return self.head(x)


def center_crop(x: torch.Tensor, spatial_shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` (N, C, ...) to ``spatial_shape`` around the centre."""
    if tuple(x.shape[2:]) == tuple(spatial_shape):
        return x
    slices = [slice(None), slice(None)]
    for size, target in zip(x.shape[2:], spatial_shape):
        start = (size - target) // 2
        slices.append(slice(start, start + target))
    return x[tuple(slices)]


def build_model(config: UNetConfig | dict) -> UNet:
    """Build a :class:`UNet` from a config or its dict form."""
    if isinstance(config, dict):
        config = UNetConfig(**config)
    return UNet(
        config.in_channels,
        config.num_classes,
        ndim=config.ndim,
        depth=config.depth,
        base_filters=config.base_filters,
        batch_norm=config.batch_norm,
        padding=config.padding,
    )
