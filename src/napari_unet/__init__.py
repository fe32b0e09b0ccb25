"""napari-unet: U-Net segmentation, training and evaluation for napari, the CLI and Python.

Everything public is importable from here; submodules load lazily, so ``import napari_unet``
(and opening napari's plugin menu) does not import torch.

>>> from napari_unet import UNet, load_model, save_model, segment, predict_tiled, train
>>> from napari_unet import metrics
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_LAZY = {
    "UNet": "napari_unet.model.unet",
    "UNetConfig": "napari_unet.model.unet",
    "load_model": "napari_unet.model.files",
    "save_model": "napari_unet.model.files",
    "layer_summary": "napari_unet.model.summary",
    "segment": "napari_unet.inference.pipeline",
    "predict_tiled": "napari_unet.inference.tiling.predict",
    "receptive_field": "napari_unet.inference.tiling.predict",
    "train": "napari_unet.training.arrays",
    "UserInputError": "napari_unet.common.errors",
    "ModelFileError": "napari_unet.common.errors",
}
_SUBMODULES = {"metrics": "napari_unet.metrics"}

__all__ = [
    "ModelFileError",
    "UNet",
    "UNetConfig",
    "UserInputError",
    "__version__",
    "layer_summary",
    "load_model",
    "metrics",
    "predict_tiled",
    "receptive_field",
    "save_model",
    "segment",
    "train",
]

if TYPE_CHECKING:  # pragma: no cover
    from . import metrics
    from .common.errors import ModelFileError, UserInputError
    from .inference.pipeline import segment
    from .inference.tiling.predict import predict_tiled, receptive_field
    from .model.files import load_model, save_model
    from .model.summary import layer_summary
    from .model.unet import UNet, UNetConfig
    from .training.arrays import train


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
