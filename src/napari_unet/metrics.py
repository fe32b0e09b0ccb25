"""Segmentation metrics: binary, multi-class and instance (see :mod:`napari_unet.evaluation.metrics`).

``from napari_unet import metrics`` and ``from napari_unet.metrics import dice`` both work;
this module only imports numpy and scipy.
"""

from .evaluation.metrics import *  # noqa: F403
from .evaluation.metrics import __all__ as __all__
