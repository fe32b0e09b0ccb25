"""Compatibility of ``bioimageio.spec`` 0.5.12 (pinned by ``bioimageio.core`` 0.11) with pydantic 2.14.

Three serializers of ``bioimageio.spec`` 0.5.12 call pydantic's wrap handler as
``handler(value, info)``; pydantic >= 2.14 only accepts ``handler(value[, index_key])`` and
raises ``TypeError: 'index_key' is expected to be an integer or a string``, so no package can
be written or tested. ``bioimageio.spec`` 0.5.14 calls ``handler(value)``, but no release of
``bioimageio.core`` allows it yet. :func:`patch` makes the three serializers pass a handler
that drops the extra argument; it does nothing where the installed pydantic accepts the old
call. Remove this module once ``bioimageio.core`` allows ``bioimageio.spec`` >= 0.5.14.
"""

from __future__ import annotations

import types
from typing import Any

_done = False


class _OneArgHandler:
    """A pydantic wrap handler called as ``handler(value, info)``: forwards ``value`` only."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    def __call__(self, value: Any, *_: Any) -> Any:
        return self._handler(value)


def _file_descr(value, handler, info):
    return _napari_unet_originals["file_descr"](value, _napari_unet_one_arg(handler), info)  # noqa: F821


def _weights(value, handler, info):
    return _napari_unet_originals["weights"](value, _napari_unet_one_arg(handler), info)  # noqa: F821


def _inner_node(self, handler, info):
    return _napari_unet_originals["inner_node"](self, _napari_unet_one_arg(handler), info)  # noqa: F821


def _needed() -> bool:
    from typing import Annotated

    from pydantic import BaseModel, WrapSerializer
    from pydantic_core import PydanticSerializationError

    class _Probe(BaseModel):
        x: Annotated[int, WrapSerializer(lambda v, handler, info: handler(v, info))]

    try:
        _Probe(x=1).model_dump()
    except (PydanticSerializationError, TypeError):
        return True
    return False


def _swap(key: str, function: types.FunctionType, replacement: types.FunctionType) -> None:
    original = types.FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    function.__globals__.setdefault("_napari_unet_originals", {})[key] = original
    function.__globals__["_napari_unet_one_arg"] = _OneArgHandler
    function.__code__ = replacement.__code__


def patch() -> None:
    """Make ``bioimageio.spec``'s serializers work with the installed pydantic (once)."""
    global _done
    if _done:
        return
    _done = True
    from bioimageio.spec import __version__

    if __version__ != "0.5.12.0" or not _needed():
        return
    from bioimageio.spec._internal import io_packaging
    from bioimageio.spec._internal.validated_string_with_inner_node import (
        ValidatedStringWithInnerNode,
    )
    from bioimageio.spec.model import v0_4

    inner = vars(ValidatedStringWithInnerNode)["_serialize"]  # pydantic's decorator proxy
    inner = getattr(inner, "wrapped", inner)
    _swap("file_descr", io_packaging.package_file_descr_serializer, _file_descr)
    _swap("weights", v0_4.package_weights, _weights)
    _swap("inner_node", getattr(inner, "__func__", inner), _inner_node)
