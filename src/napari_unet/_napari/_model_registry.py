"""Models trained in this napari session, so the Segment widget can pick them at once.

The Train widget calls :func:`register_model` when a training run ends; the Segment widget
lists :func:`registered_models` in its model choice and refreshes that list when
:data:`models_changed` fires. The registry lives in memory only (a saved model file is the
durable form) and is touched on the GUI thread only.

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

from typing import TYPE_CHECKING

from psygnal import Signal

from ..common.errors import UserInputError

if TYPE_CHECKING:
    from ..model.unet import UNet

__all__ = [
    "clear_models",
    "get_model",
    "models_changed",
    "register_model",
    "registered_models",
    "unique_name",
    "unregister_model",
]


class _Registry:
    """The session's trained models by name, with a signal emitting the changed name."""

    changed = Signal(str)

    def __init__(self) -> None:
        self.models: dict[str, UNet] = {}


_REGISTRY = _Registry()

#: psygnal signal emitted with a model's name after it is registered, replaced or removed
#: (with "" after :func:`clear_models`). Connect a callable taking one ``str``.
models_changed = _REGISTRY.changed


def register_model(name: str, model: UNet) -> None:
    """Make ``model`` selectable under ``name``; a model of the same name is replaced.

    Parameters
    ----------
    name : str
        The name shown in the Segment widget; must not be empty.
    model : UNet
        A trained network in eval mode, with its ``card`` filled in.
    """
    name = str(name).strip()
    if not name:
        raise UserInputError("a registered model needs a non-empty name")
    _REGISTRY.models.pop(name, None)  # the newest model is listed last
    _REGISTRY.models[name] = model
    models_changed.emit(name)


def unregister_model(name: str) -> None:
    """Forget the model called ``name`` (no error when there is none)."""
    if _REGISTRY.models.pop(name, None) is not None:
        models_changed.emit(name)


def clear_models() -> None:
    """Forget every registered model."""
    _REGISTRY.models.clear()
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
