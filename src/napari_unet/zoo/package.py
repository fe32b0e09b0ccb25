"""Open a local BioImage.IO model package without running any code shipped with it.

A package is a ``.zip`` or a folder holding ``rdf.yaml`` (or ``bioimageio.yaml``). Loading
first checks it (:func:`~.checked.check_package`: the zip itself, the description as plain
YAML data, every file it names inside the package and matching its SHA-256, sizes known before
anything is inflated), then reads its description with ``bioimageio.spec`` (no network:
remote checks are off), then picks weights that run without the package's own Python code:

* ``pytorch_state_dict`` whose architecture is napari-unet's ``UNet``: read with
  ``torch.load(weights_only=True)`` into a :class:`~napari_unet.model.unet.UNet`; with the
  napari-unet card in ``config.napari_unet`` it is the same model as the ``.safetensors`` file
  it was exported from (same normalisation, post-processing and automatic object size);
* ``torchscript`` (TorchScript programs, no Python) or ``onnx`` (with ``onnxruntime``
  installed): run by :class:`~.runner.ZooModel` with the package's own pre/post-processing.

Anything else (a ``pytorch_state_dict`` whose architecture is a Python file or another
library, Keras, TensorFlow, custom processing) is refused with a message naming the weight
formats that would work.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from ..common.errors import ModelFileError
from ..model.card_checks import check_document, check_weights
from ..model.unet import UNet, UNetConfig, build_model
from .checked import check_package, description_name
from .describe import CONFIG_KEY
from .offline import offline, require_bioimageio

__all__ = ["is_package", "load_package"]

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: weight formats napari-unet runs, in order of preference, for a foreign package
RUNNABLE = ("torchscript", "onnx")
#: pre/post-processing operations of the spec that bioimageio.core runs without extra code
STANDARD_OPS = frozenset(
    {
        "binarize",
        "clip",
        "ensure_dtype",
        "fixed_zero_mean_unit_variance",
        "scale_linear",
        "scale_mean_variance",
        "scale_range",
        "sigmoid",
        "softmax",
        "zero_mean_unit_variance",
    }
)
_UNET = ("napari_unet.model.unet", "UNet")


def is_package(source: Any) -> bool:
    """Whether ``source`` is a path to a local BioImage.IO package (zip, folder or rdf file).

    Only the file names are looked at; :func:`read_description` checks the package.
    """
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    if path.is_dir():
        return any((path / name).is_file() for name in RDF_NAMES)
    if path.name in RDF_NAMES or path.name.endswith(".bioimageio.yaml"):
        return path.is_file()
    return path.is_file() and is_package_zip(path)


def is_package_zip(path: Path) -> bool:
    """Whether ``path`` is a zip file with a package description among its members."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    try:
        return description_name(names) is not None
    except ModelFileError:  # two descriptions: a package, refused when it is read
        return True


def load_package(source: str | os.PathLike, *, weights: str = "auto", device: str = "cpu"):
    """Load a BioImage.IO model package for :func:`napari_unet.segment`.

    Parameters
    ----------
    source : path-like
        A package ``.zip``, a folder with ``rdf.yaml``, or the ``rdf.yaml`` itself.
    weights : {"auto", "pytorch_state_dict", "torchscript", "onnx"}
        Which weights to run. ``"auto"``: napari-unet's own ``UNet`` when the package has it
        as ``pytorch_state_dict``, else torchscript, else onnx.
    device : str
        Where a :class:`UNet` is put (a :class:`~.runner.ZooModel` picks its device when it
        runs).

    Returns
    -------
    UNet or ZooModel

    Raises
    ------
    ModelFileError
        Not a valid package, or no weights that run without the package's own code.
    """
    descr = read_description(source)
    _check_processing(descr)
    fmt = choose_weights(descr, weights)
    if fmt == "pytorch_state_dict":
        return _load_unet(descr, source).to(device).eval()
    from .runner import ZooModel

    return ZooModel(descr, fmt)


def read_description(source: str | os.PathLike):
    """The package's description, updated to the latest format (0.5), read offline.

    The package is checked first (:func:`~.checked.check_package`): ``bioimageio.spec`` reads
    only a package whose container, description and files passed.
    """
    if not is_package(source):
        raise ModelFileError(
            f"{source} is not a BioImage.IO package: expected a .zip or a folder with rdf.yaml"
        )
    require_bioimageio()
    check_package(source)  # the container, the description and its files, before bioimageio
    with offline():
        from bioimageio.spec import InvalidDescr, load_model_description

        try:
            descr = load_model_description(
                Path(source), perform_io_checks=False, format_version="latest"
            )
        except (ValueError, OSError) as err:
            raise ModelFileError(f"{source}: not a valid BioImage.IO model package: {err}") from err
    if isinstance(descr, InvalidDescr):
        raise ModelFileError(
            f"{source} is not a valid BioImage.IO model package:\n"
            + descr.validation_summary.format()
        )
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ModelFileError(
            f"{source}: napari-unet runs packages with one input and one output tensor; this "
            f"one has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs"
        )
    return descr


def runnable_formats(descr) -> dict[str, str]:
    """The package's weight formats, each with why it can or cannot run (``"ok"`` or a reason)."""
    out = {}
    for fmt, entry in _weight_entries(descr).items():
        if fmt == "pytorch_state_dict":
            out[fmt] = "ok" if is_own_unet(entry) else _architecture_reason(entry)
        elif fmt == "torchscript":
            out[fmt] = "ok"
        elif fmt == "onnx":
            has_ort = importlib.util.find_spec("onnxruntime") is not None
            out[fmt] = "ok" if has_ort else "needs onnxruntime (pip install onnxruntime)"
        else:
            out[fmt] = "not supported by napari-unet"
    return out


def choose_weights(descr, weights: str = "auto") -> str:
    """The weight format to run (see :func:`load_package`); raises if none can run."""
    formats = runnable_formats(descr)
    if weights != "auto":
        if formats.get(weights) != "ok":
            why = formats.get(weights, "not in the package")
            raise ModelFileError(f"cannot use the package's {weights} weights: {why}")
        return weights
    own = formats.get("pytorch_state_dict") == "ok" and CONFIG_KEY in (
        descr.config.model_extra or {}
    )
    for fmt in (("pytorch_state_dict",) if own else ()) + RUNNABLE + ("pytorch_state_dict",):
        if formats.get(fmt) == "ok":
            return fmt
    found = "; ".join(f"{k}: {v}" for k, v in formats.items())
    raise ModelFileError(
        f"{descr.name!r}: none of this package's weights can run in napari-unet ({found}). "
        "napari-unet never runs Python code shipped with a model; packages with torchscript "
        "or onnx weights (or pytorch_state_dict weights of napari-unet's own UNet) work: ask "
        "the model's authors for torchscript or onnx weights, or convert them with "
        "bioimageio.core's weight converters in an environment you trust"
    )


def is_own_unet(entry) -> bool:
    """Whether a ``pytorch_state_dict`` entry's architecture is napari-unet's ``UNet``."""
    arch = entry.architecture
    return (getattr(arch, "import_from", None), str(arch.callable)) == _UNET


def _architecture_reason(entry) -> str:
    arch = entry.architecture
    if getattr(arch, "import_from", None) is None:
        return "its architecture is Python code shipped in the package (refused)"
    return f"its architecture comes from another library ({arch.import_from}.{arch.callable})"


def _weight_entries(descr) -> dict[str, Any]:
    w = descr.weights
    names = (
        "pytorch_state_dict",
        "torchscript",
        "onnx",
        "keras_hdf5",
        "keras_v3",
        "tensorflow_saved_model_bundle",
        "tensorflow_js",
    )
    return {n: getattr(w, n) for n in names if getattr(w, n, None) is not None}


def _check_processing(descr) -> None:
    steps = [p.id for t in descr.inputs for p in t.preprocessing]
    steps += [p.id for t in descr.outputs for p in t.postprocessing]
    custom = sorted({s for s in steps if s not in STANDARD_OPS})
    if custom:
        raise ModelFileError(
            f"{descr.name!r} needs processing steps that napari-unet does not run "
            f"({', '.join(custom)}); packages with the spec's standard pre/post-processing "
            f"({', '.join(sorted(STANDARD_OPS))}) work"
        )


def _load_unet(descr, source) -> UNet:
    """napari-unet's ``UNet`` from the package's ``pytorch_state_dict`` (no unpickling of code)."""
    import torch

    entry = descr.weights.pytorch_state_dict
    kwargs = dict(entry.architecture.kwargs)
    extra = (descr.config.model_extra or {}).get(CONFIG_KEY) or {}
    try:
        model = build_model(UNetConfig(**{**extra.get("architecture", {}), **kwargs}))
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{source}: invalid UNet architecture {kwargs}: {err}") from err
    data = _read_file(entry, source)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as err:
        # torch's message advises weights_only=False: running the file's code, never done here
        raise ModelFileError(
            f"{source}: its pytorch_state_dict weights are not a plain dictionary of tensors "
            "(napari-unet reads them without running code, and this file needs more)"
        ) from err
    if not isinstance(state, dict):
        raise ModelFileError(
            f"{source}: its pytorch_state_dict weights are a {type(state).__name__}, not a "
            "dictionary of tensors"
        )
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    # as a model file's: the weights fit and are finite, the card's values are in range
    check_weights(model.state_dict(), state, source)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(
            f"{source}: its pytorch_state_dict weights do not fit the architecture it "
            f"describes ({first})"
        ) from err
    card = {k: v for k, v in extra.items() if k not in ("format_version", "architecture")}
    if card:
        check_document({**card, "architecture": model.config.to_dict()}, source)
    model.card = card or _card_from_description(descr, model)
    return model


def _card_from_description(descr, model: UNet) -> dict[str, Any]:
    from ..model.files import default_card

    card = default_card(model)
    card.update(name=descr.name, description=descr.description)
    return card


def _read_file(entry, source) -> bytes:
    from bioimageio.spec.utils import get_reader

    with offline():
        return get_reader(entry).read()
