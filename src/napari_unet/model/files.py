"""Model files: one ``.safetensors`` file with the weights and a JSON model card.

The card lives in the safetensors metadata under the key ``"napari_unet"``. It records the
format version, the architecture arguments, the task and class names, the input axes and
channels, the normalisation, the provenance and the final metrics, so a model file describes
itself and can be rebuilt without any command-line flags. Loading never unpickles: a model file
from a stranger cannot run code.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..common.atomic import atomic_write
from ..common.errors import ModelFileError, UserInputError, describe_os_error, write_error
from .card_checks import REMEDY, TASKS, check_document, check_weights
from .unet import UNet, UNetConfig, build_model

FORMAT_VERSION = 1
METADATA_KEY = "napari_unet"
BUILTIN_MODELS = ("nuclei", "nuclei-he")

DEFAULT_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}
#: class names of the instance task: the target a 3-class model learns
INSTANCE_CLASSES = ["background", "interior", "boundary"]


def default_card(model: UNet) -> dict[str, Any]:
    """The card a model gets when nothing else is known about it."""
    n = model.num_classes
    task = "instance" if n == 3 else "semantic"
    names = (
        INSTANCE_CLASSES
        if task == "instance"
        else ["background"] + [f"class {i}" for i in range(1, n)]
    )
    return {
        "name": "unet",
        "description": "",
        "task": task,
        "class_names": list(names[:n]),
        "input": {"axes": "ZYX" if model.ndim == 3 else "YX", "channels": model.in_channels},
        "normalization": dict(DEFAULT_NORMALIZATION),
        "provenance": {},
        "metrics": {},
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries that matter for reproducing a model."""
    import numpy

    from .._version import __version__

    return {
        "napari_unet": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _validate_card(card: dict[str, Any], model: UNet) -> None:
    if card["task"] not in TASKS:
        raise UserInputError(f"task must be one of {TASKS}, got {card['task']!r}")
    if len(card["class_names"]) != model.num_classes:
        raise UserInputError(
            f"class_names has {len(card['class_names'])} names but the model has "
            f"{model.num_classes} classes"
        )
    if card["task"] == "instance" and model.num_classes != 3:
        raise UserInputError(
            "an instance model needs 3 classes (background, interior, boundary), "
            f"this one has {model.num_classes}"
        )


def save_model(model: UNet, path: str | os.PathLike, *, half: bool = False, **card: Any) -> Path:
    """Write ``model`` and its card to one ``.safetensors`` file, atomically.

    Parameters
    ----------
    model : UNet
        The network; its ``card`` attribute supplies defaults for the card.
    path : path-like
        Destination; ``.safetensors`` is the conventional suffix.
    half : bool
        Store floating-point weights as float16 (half the size); they are loaded as float32.
    **card
        Card entries that override ``model.card``: ``name``, ``description``, ``task``,
        ``class_names``, ``input``, ``normalization``, ``provenance``, ``metrics`` and any
        other JSON-serialisable entries.

    Returns
    -------
    Path
        The written file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    full = {**default_card(model), **model.card, **card}
    full["provenance"] = {"library_versions": library_versions(), **full.get("provenance", {})}
    _validate_card(full, model)
    document = {"format_version": FORMAT_VERSION, "architecture": model.config.to_dict(), **full}
    try:
        text = json.dumps(document, sort_keys=True)
    except TypeError as err:
        raise UserInputError(f"the model card must be JSON-serialisable: {err}") from err

    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value.contiguous()
    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: text})
    except (SafetensorError, RuntimeError) as err:  # a failed write (e.g. a full disk)
        raise write_error(err, path, "the model file") from err
    model.card = full
    return path


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the JSON document of a model file without loading the weights.

    The document is checked by :func:`~.card_checks.check_document`: a damaged or hand-edited
    card (not an object, no valid architecture, normalisation percentiles or post-processing
    settings out of range, a bad ``object_diameter`` ...) raises :class:`ModelFileError`.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise ModelFileError(
            f"{path} is a folder, not a model file: give a .safetensors model file "
            f"(or a built-in name: {', '.join(BUILTIN_MODELS)})"
        )
    if not path.is_file():
        raise ModelFileError(
            f"model file not found: {path} (give a .safetensors model file, or a built-in model: "
            f"{', '.join(BUILTIN_MODELS)})"
        )
    _refuse_pickles(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(
            f"{path} is not a readable model file (truncated, or not a .safetensors file): {err}"
        ) from err
    if METADATA_KEY not in metadata:
        raise ModelFileError(
            f"{path} is a safetensors file but not a napari-unet model (no {METADATA_KEY!r} metadata)"
        )
    try:
        document = json.loads(metadata[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as err:
        raise ModelFileError(f"{path} has a corrupt model card: {err}") from err
    if not isinstance(document, dict):
        raise ModelFileError(
            f"{path} has an invalid model card: it must be a JSON object (a dict), got "
            f"{type(document).__name__} ({REMEDY})"
        )
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path} has no valid format_version in its model card")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer napari-unet (model format {version}; this version "
            f"reads up to {FORMAT_VERSION}): upgrade napari-unet to load it"
        )
    return check_document(document, path)


#: first bytes of the files that carry code: a zip (torch.save) or a raw pickle
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _refuse_pickles(path: Path) -> None:
    """A PyTorch ``.pt``/``.pth``/``.ckpt`` file is refused unread: unpickling can run code."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise ModelFileError(f"{path}: {describe_os_error(err, with_path=False)}") from err
    if head.startswith(b"PK\x03\x04") and _is_zoo_package(path):
        raise ModelFileError(
            f"{path} is a BioImage.IO model package (a zip with rdf.yaml), not a .safetensors "
            "model file: use it where packages are taken (segment --model, info, train --init; "
            "segment(model=...), napari_unet.zoo.load_package)"
        )
    if head.startswith(_PICKLE_MAGIC) and path.suffix.lower() == ".ckpt":
        raise ModelFileError(
            f"{path} is a training checkpoint, not a model file: give the .safetensors model "
            "written by the same run (a checkpoint is for napari-unet train --resume)"
        )
    if head.startswith(_PICKLE_MAGIC):
        raise ModelFileError(
            f"{path} is a PyTorch pickle (torch.save) file, not a napari-unet .safetensors model; "
            "it is not loaded because such files can run code: use a model file written by "
            "napari-unet (save_model, napari-unet train)"
        )


def _is_zoo_package(path: Path) -> bool:
    """Whether the zip ``path`` holds a BioImage.IO description (``rdf.yaml`` and its kin)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    kinds = ("rdf.yaml", "bioimageio.yaml", "model.yaml")
    return any(n == k or n.endswith("." + k) for n in names for k in kinds)


def load_model(
    path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> UNet:
    """Load a model file (or the built-in model) into a :class:`UNet` in eval mode.

    Parameters
    ----------
    path : path-like or None
        A ``.safetensors`` model file, the name of a built-in model (``"nuclei"``), or ``None``
        for the built-in nuclei model.
    device : str or torch.device
        Where to put the weights.

    Returns
    -------
    UNet
        With ``model.card`` holding the model card.

    Raises
    ------
    ModelFileError
        The file is missing, truncated, not a model, from a newer format, its card is invalid
        (see :func:`read_card`), or its weights do not match its architecture or hold NaN or
        infinite values.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = builtin_model_path() if path is None else path
    if isinstance(path, str) and path in BUILTIN_MODELS:
        path = builtin_model_path(path)
    document = read_card(path)  # checked: the architecture is valid
    model = build_model(UNetConfig(**document["architecture"]))
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(
            f"{path}: the weights cannot be read (truncated file?): {err}"
        ) from err
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    check_weights(model.state_dict(), state, path)  # names, shapes, finite values
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # not expected after check_weights: still one line
        raise ModelFileError(
            f"{path}: its weights do not match the architecture in its card: "
            f"{' '.join(str(err).split())} ({REMEDY})"
        ) from err
    model.card = {k: v for k, v in document.items() if k not in ("format_version", "architecture")}
    return model.to(device).eval()


def builtin_model_path(name: str = "nuclei") -> Path:
    """Path of a model file shipped inside the package."""
    if name not in BUILTIN_MODELS:
        raise UserInputError(f"unknown built-in model {name!r}; choose one of {BUILTIN_MODELS}")
    path = Path(str(resources.files("napari_unet") / "models" / f"{name}.safetensors"))
    if not path.is_file():
        raise ModelFileError(
            f"the built-in {name!r} model is missing from this installation ({path}); "
            "pass a model file with --model / model=..."
        )
    return path


def resolve_model(
    model: UNet | str | os.PathLike | None, device: str | torch.device = "cpu"
) -> UNet:
    """A :class:`UNet` from a model, a path, a built-in name or ``None`` (built-in)."""
    if isinstance(model, UNet):
        return model
    if not (model is None or isinstance(model, str | os.PathLike)):
        raise UserInputError(
            f"model must be a UNet, a model file path or a built-in name such as 'nuclei', "
            f"got {type(model).__name__}"
        )
    return load_model(model, device=device)
