"""Checks of a model file's contents: its JSON model card and its weights.

:func:`~napari_unet.model.files.read_card` and :func:`~napari_unet.model.files.load_model` run
these on every file they read, so a damaged or hand-edited file is refused at once with one
line that names the file, the bad entry and its value (a
:class:`~napari_unet.common.errors.ModelFileError`; the CLI exits with code 2), rather than
failing later inside segmentation or giving silently wrong results.

Only the entries this package reads are checked; unknown entries are kept as they are. The
``size_model`` entry is not checked here: segmentation ignores an unusable one with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..common.errors import ModelFileError, UserInputError
from ..common.validate import (
    POSTPROCESSING_KEYS,
    check_number,
    check_postprocessing_value,
)
from .unet import UNetConfig

__all__ = ["check_document", "check_weights", "compare_weights"]

#: what every refusal of a damaged file ends with
REMEDY = "the file is damaged or was edited by hand: re-export or retrain the model"
#: normalisation percentiles a card leaves out (as :mod:`napari_unet.inference.images.normalize`)
DEFAULT_PERCENTILES = {"low": 1.0, "high": 99.8}
#: what a model does (``files.py`` takes them from here)
TASKS = ("instance", "semantic")
#: normalisation methods (as :data:`napari_unet.inference.images.normalize.METHODS`, which
#: this layer may not import)
METHODS = ("percentile", "minmax", "none")
_SHORT = 60


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length (a card entry may be a huge list)."""
    text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _refuse(path: Path, problem: str, what: str = "an invalid model card") -> ModelFileError:
    return ModelFileError(f"{path} has {what}: {problem} ({REMEDY})")


def _number(path: Path, name: str, value: Any, **bounds: Any) -> Any:
    """:func:`check_number` on a card entry, as a :class:`ModelFileError` naming the file."""
    try:
        return check_number(value, name, **bounds)
    except UserInputError as err:
        message = str(err).replace(repr(value), _short(value))
        raise _refuse(path, message) from None


def _mapping(path: Path, name: str, value: Any, what: str = "an invalid model card") -> None:
    if not isinstance(value, Mapping):
        raise _refuse(path, f"{name} must be a JSON object (a dict), got {_short(value)}", what)


def check_document(document: Any, path: str | Path) -> dict[str, Any]:
    """Check the JSON document of a model file (format version aside); return it.

    Checked: the document is an object; ``architecture`` is present and valid; ``task``,
    ``class_names`` and ``input`` have the right types (and agree with the architecture);
    ``normalization`` percentiles are finite, within [0, 100] and ``low < high``;
    ``postprocessing`` thresholds are in (0, 1), ``split >= 0`` and ``min_size`` a whole
    number >= 0; ``object_diameter`` is a finite number > 0; ``provenance`` and ``metrics``
    are objects.

    Parameters
    ----------
    document : object
        The parsed JSON of the card.
    path : path-like
        The model file (named in the messages).

    Raises
    ------
    ModelFileError
        The first problem found, with the file, the entry, its value and what to do.
    """
    path = Path(path)
    _mapping(path, "the model card", document)
    config = _check_architecture(document, path)
    _check_task(document, config, path)
    _check_normalization(document.get("normalization"), path)
    _check_postprocessing(document.get("postprocessing"), path)
    if document.get("object_diameter") is not None:
        _number(path, "object_diameter", document["object_diameter"], minimum=0, low_open=True)
    for key in ("provenance", "metrics"):
        if document.get(key) is not None:
            _mapping(path, key, document[key])
    for key in ("name", "description"):
        if document.get(key) is not None and not isinstance(document[key], str):
            raise _refuse(path, f"{key} must be text, got {_short(document[key])}")
    return document


def _check_architecture(document: Mapping[str, Any], path: Path) -> UNetConfig:
    what = "an invalid architecture in its model card"
    if "architecture" not in document:
        raise _refuse(path, "the 'architecture' entry is missing", what)
    arch = document["architecture"]
    _mapping(path, "architecture", arch, what)
    try:
        return UNetConfig(**arch)
    except TypeError:
        known = set(UNetConfig.__dataclass_fields__)
        unknown = sorted(set(map(str, arch)) - known)
        raise _refuse(path, f"unknown setting(s) {', '.join(map(repr, unknown))}", what) from None
    except UserInputError as err:
        raise _refuse(path, str(err), what) from None


def _check_task(document: Mapping[str, Any], config: UNetConfig, path: Path) -> None:
    task = document.get("task")
    if task is not None:
        if task not in TASKS:
            raise _refuse(path, f"task must be one of {TASKS}, got {_short(task)}")
        if task == "instance" and config.num_classes != 3:
            raise _refuse(
                path,
                f"task is 'instance' but the architecture has {config.num_classes} classes "
                "(an instance model has 3: background, interior, boundary)",
            )
    names = document.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _refuse(path, f"class_names must be a list of names, got {_short(names)}")
        if len(names) != config.num_classes:
            raise _refuse(
                path,
                f"class_names has {len(names)} names but the architecture has "
                f"{config.num_classes} classes",
            )
    spec = document.get("input")
    if spec is not None:
        _mapping(path, "input", spec)
        if spec.get("axes") is not None and not isinstance(spec["axes"], str):
            raise _refuse(path, f"input.axes must be text such as 'YX', got {_short(spec['axes'])}")
        if spec.get("channels") is not None:
            _number(path, "input.channels", spec["channels"], minimum=1, integer=True)


def _check_normalization(spec: Any, path: Path) -> None:
    if spec is None:
        return
    _mapping(path, "normalization", spec)
    method = spec.get("method", "percentile")
    if method not in METHODS:
        raise _refuse(path, f"normalization.method must be one of {METHODS}, got {_short(method)}")
    if method != "percentile":
        return
    values = {}
    for key, default in DEFAULT_PERCENTILES.items():
        value = spec.get(key, default)
        values[key] = _number(path, f"normalization.{key}", value, minimum=0, maximum=100)
    if not values["low"] < values["high"]:
        raise _refuse(
            path,
            f"normalization.low ({values['low']!r}) must be below normalization.high "
            f"({values['high']!r})",
        )


def _check_postprocessing(post: Any, path: Path) -> None:
    if post is None:
        return
    _mapping(path, "postprocessing", post)
    for key in POSTPROCESSING_KEYS:
        if key in post:
            value = post[key]
            try:
                check_postprocessing_value(key, value, f"postprocessing.{key}")
            except UserInputError as err:
                raise _refuse(path, str(err).replace(repr(value), _short(value))) from None


def _shape(shape: Any) -> str:
    dims = tuple(int(s) for s in shape)
    return f"({dims[0]},)" if len(dims) == 1 else str(dims)


def compare_weights(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str | None:
    """The first difference between two state dicts' keys and shapes, in words, or ``None``.

    Parameters
    ----------
    expected : mapping of str to tensor
        What the architecture needs (``model.state_dict()``).
    found : mapping of str to tensor
        What the file holds.
    """
    for key, want in expected.items():
        if key not in found:
            return f"{key} is missing from the file"
        have = found[key]
        if tuple(have.shape) != tuple(want.shape):
            return f"{key}: shape {_shape(have.shape)} in the file, {_shape(want.shape)} expected"
    extra = [key for key in found if key not in expected]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        return f"the file has weights the architecture does not use: {extra[0]}{more}"
    return None


def check_weights(expected: Mapping[str, Any], state: Mapping[str, Any], path: str | Path) -> None:
    """Refuse weights that do not fit the architecture, or that hold NaN or infinite values.

    Parameters
    ----------
    expected : mapping of str to tensor
        ``model.state_dict()`` of the network built from the card.
    state : mapping of str to tensor
        The tensors of the file (floating point ones as they will be loaded).
    path : path-like
        The model file (named in the messages).

    Raises
    ------
    ModelFileError
    """
    import torch

    path = Path(path)
    mismatch = compare_weights(expected, state)
    if mismatch is not None:
        raise ModelFileError(
            f"{path}: its weights do not match the architecture in its card ({mismatch}); {REMEDY}"
        )
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            n_bad = int(finite.numel() - finite.sum())
            raise ModelFileError(
                f"{path}: its weights hold NaN or infinite values ({key}: {n_bad} of "
                f"{finite.numel()} values); {REMEDY}"
            )
