"""One entry for every kind of model: a UNet, a model file, a built-in name or a zoo package."""

from __future__ import annotations

import os
from typing import Any

from ..common.errors import UserInputError
from ..model import files
from .package import is_package, load_package, read_description, runnable_formats


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


def trainable_model(model: Any) -> Any:
    """The napari-unet :class:`~napari_unet.UNet` to fine-tune for ``model``.

    Parameters
    ----------
    model : UNet, path-like, "nuclei" or None
        As in :func:`resolve_model`. A BioImage.IO package can be fine-tuned when it holds
        napari-unet's own ``UNet`` as ``pytorch_state_dict`` weights (every package that
        napari-unet exports does); its card (task, normalisation, object size) comes along.

    Raises
    ------
    UserInputError
        A package (or a loaded zoo model) whose network is not napari-unet's U-Net, in plain
        words: why, and what to do instead.
    """
    if hasattr(model, "predict_iter"):  # a package loaded to run with bioimageio.core
        descr = model.descr
    elif isinstance(model, (str, os.PathLike)) and is_package(model):
        descr = read_description(model)
        if runnable_formats(descr).get("pytorch_state_dict") == "ok":
            return load_package(model, weights="pytorch_state_dict")
    else:
        return files.resolve_model(model, "cpu")
    formats = runnable_formats(descr)
    why = formats.get("pytorch_state_dict") or (
        f"it has no PyTorch weights of napari-unet's U-Net, only {', '.join(formats)} weights"
    )
    raise UserInputError(
        f"the model {descr.name!r} cannot be retrained here: it is a BioImage.IO package "
        f"whose network is not napari-unet's U-Net ({why}). Segment with it as it is, or "
        "train a napari-unet model on your corrections (Train dock, start from the built-in "
        "nuclei model) and retrain that one"
    )
