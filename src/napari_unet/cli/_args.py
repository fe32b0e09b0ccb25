"""argparse types over the shared validator: ``--lr nan`` is a usage error, as in the API."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def number(*, integer: bool = False, **bounds: Any) -> Callable[[str], Any]:
    """An argparse ``type``: a finite number (whole with ``integer``) within ``bounds``.

    ``bounds`` are those of :func:`napari_unet.common.validate.check_number` (``minimum``,
    ``maximum``, ``low_open``, ``high_open``).

    Examples
    --------
    >>> p.add_argument("--lr", type=number(minimum=0, low_open=True))  # doctest: +SKIP
    """

    def parse(text: str) -> Any:
        from ..common.errors import UserInputError
        from ..common.validate import check_number

        try:
            value = float(text) if not integer else _whole(text)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return check_number(value, "the value", integer=integer, **bounds)
        except UserInputError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("the value ")) from None

    parse.__name__ = "whole number" if integer else "number"  # argparse names it in messages
    return parse


def _whole(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)  # '3.5', 'nan', 'inf': refused by check_number with its reason


#: common argument types
positive = number(minimum=0, low_open=True)
non_negative = number(minimum=0)
positive_int = number(integer=True, minimum=1)
non_negative_int = number(integer=True, minimum=0)
probability = number(minimum=0, maximum=1, low_open=True, high_open=True)
