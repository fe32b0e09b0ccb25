"""One entry for every kind of model: a UNet, a model file, a built-in name or a zoo package."""

from __future__ import annotations

import os
from typing import Any

from ..model import files
from .package import is_package, load_package


def resolve_model(model: Any, device: str = "cpu") -> Any:
    """A :class:`~napari_unet.UNet` or :class:`~.runner.ZooModel` for ``model``.

    Parameters
    ----------
    model : UNet, ZooModel, path-like, "nuclei" or None
        A network, a ``.safetensors`` model file, a BioImage.IO package (``.zip``, folder or
        ``rdf.yaml``), a built-in model name, or ``None`` for the built-in model.
    device : str
        Where a :class:`UNet` loaded from a file is put.
    """
    if hasattr(model, "predict_iter"):  # already a ZooModel
        return model
    if isinstance(model, (str, os.PathLike)) and is_package(model):
        return load_package(model, device=device)
    return files.resolve_model(model, device)
