"""Models trained in this napari session, and the model the Segment docks use.

The Train widget and Correct and retrain call :func:`register_model` when a training run
ends; the Segment widget lists :func:`registered_models` in its model choice and refreshes
that list when :data:`models_changed` fires. A model from a training run is only offered
(``select=False``) unless it beat the current model on held-back data; :func:`use_model`
switches every Segment dock to a model (a trained one, the built-in model or a file), as
*Undo retrain* does. The registry also remembers the Segment model last chosen
(:func:`current_choice`), which a training run compares its model with and a Segment dock
opened later starts from. It lives in memory only (a saved model file is the durable form)
and is touched on the GUI thread only. :func:`chosen_model` turns a Segment dock's model choice
(the built-in model, a model file, a trained model) into the model ``segment`` takes, and
:func:`model_name` names it.

Examples
--------
>>> from napari_unet._napari import _model_registry as registry
>>> registry.models_changed.connect(lambda name: print("changed:", name))  # doctest: +SKIP
>>> registry.register_model("my nuclei U-Net", model)  # doctest: +SKIP
changed: my nuclei U-Net
>>> registry.get_model("my nuclei U-Net") is model  # doctest: +SKIP
True
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal

from ..common.errors import UserInputError

if TYPE_CHECKING:
    from ..model.unet import UNet

__all__ = [
    "BUILTIN",
    "FROM_FILE",
    "TRAINED",
    "chosen_model",
    "clear_models",
    "current_choice",
    "get_model",
    "model_name",
    "model_used",
    "models_changed",
    "note_choice",
    "register_model",
    "registered_models",
    "trained_choice",
    "unique_name",
    "unregister_model",
    "use_model",
]

#: the Segment dock's model choices: the built-in model, a file, a model trained this session
#: (``TRAINED`` + its name)
BUILTIN = "built-in nuclei"
FROM_FILE = "model file"
TRAINED = "trained: "


class _Registry:
    """The session's trained models by name, and the Segment model last chosen."""

    changed = Signal(str)
    used = Signal(str, str)

    def __init__(self) -> None:
        self.models: dict[str, UNet] = {}
        #: the Segment dock's (model source, model file) last chosen; None: the default
        self.current: tuple[str, str] | None = None


_REGISTRY = _Registry()

#: psygnal signal emitted with a model's name after it is registered, replaced or removed
#: (with "" after :func:`clear_models`). Connect a callable taking one ``str``.
models_changed = _REGISTRY.changed

#: psygnal signal emitted with ``(model source, model file)`` when every Segment dock is to
#: use that model (:func:`use_model`): the dock's Model choice and, for a file, its path.
model_used = _REGISTRY.used


def trained_choice(name: str) -> str:
    """The Segment dock's model choice for the registered model ``name``."""
    return TRAINED + name


def register_model(name: str, model: UNet, *, select: bool = True) -> None:
    """Offer ``model`` under ``name``; a model of the same name is replaced.

    Parameters
    ----------
    name : str
        The name shown in the Segment widget; must not be empty.
    model : UNet
        A trained network in eval mode, with its ``card`` filled in.
    select : bool, default True
        Also make it the model of every Segment dock (:func:`use_model`). A training run
        passes False unless its model beat the current one on held-back data.
    """
    name = str(name).strip()
    if not name:
        raise UserInputError("a registered model needs a non-empty name")
    _REGISTRY.models.pop(name, None)  # the newest model is listed last
    _REGISTRY.models[name] = model
    models_changed.emit(name)
    if select:
        use_model(trained_choice(name))


def use_model(source: str, model_file: str = "") -> None:
    """Make every Segment dock use the model choice ``source`` (a file: ``model_file``)."""
    note_choice(source, model_file)
    model_used.emit(source, model_file)


def note_choice(source: str, model_file: str = "") -> None:
    """Remember the Segment model the user chose (what a training run compares with)."""
    _REGISTRY.current = (str(source), str(model_file or ""))


def current_choice() -> tuple[str, str] | None:
    """The Segment dock's ``(model source, model file)`` last chosen, None before any."""
    current = _REGISTRY.current
    if current is not None and current[0].startswith(TRAINED):
        if current[0][len(TRAINED) :] not in _REGISTRY.models:  # forgotten since
            return None
    return current


def unregister_model(name: str) -> None:
    """Forget the model called ``name`` (no error when there is none)."""
    if _REGISTRY.models.pop(name, None) is not None:
        models_changed.emit(name)


def clear_models() -> None:
    """Forget every registered model (and the Segment model last chosen)."""
    _REGISTRY.models.clear()
    _REGISTRY.current = None
    models_changed.emit("")


def registered_models() -> dict[str, UNet]:
    """The registered models by name, oldest (least recently registered) first (a copy: changing it changes nothing)."""
    return dict(_REGISTRY.models)


def unique_name(base: str) -> str:
    """``base``, or ``"base 2"``, ``"base 3"``... : the first not registered yet."""
    name, n = base, 1
    while name in _REGISTRY.models:
        n += 1
        name = f"{base} {n}"
    return name


def get_model(name: str) -> UNet:
    """The model registered as ``name``.

    Raises
    ------
    UserInputError
        No model of that name is registered.
    """
    try:
        return _REGISTRY.models[name]
    except KeyError:
        known = ", ".join(repr(n) for n in _REGISTRY.models) or "none"
        raise UserInputError(
            f"no trained model called {name!r} in this session (registered: {known})"
        ) from None


def chosen_model(source: str, model_file: Any) -> Any:
    """The Segment dock's model choice as ``segment_iter`` takes it: None, a Path or a UNet."""
    if source == FROM_FILE:
        path = Path(model_file)
        if not path.is_file():
            raise UserInputError(
                f"choose a model file (.safetensors) or a BioImage.IO package (.zip); "
                f"{path} is not a file"
            )
        return path
    if source.startswith(TRAINED):
        return get_model(source[len(TRAINED) :])
    return None


def model_name(source: str, model: Any) -> str:
    """The name of ``model`` (None: built-in, a Path, or a trained UNet) chosen as ``source``."""
    if model is None:
        return BUILTIN
    if isinstance(model, Path):
        return model.stem
    return str((getattr(model, "card", None) or {}).get("name") or source)
