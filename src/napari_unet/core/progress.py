"""Driving the progress generators of the core.

Long work in :mod:`napari_unet.core` is a generator that yields small progress events and
returns its result. The napari widgets run such a generator in a thread worker; everything
else runs it to the end with :func:`run_to_end`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

E = TypeVar("E")
R = TypeVar("R")


def run_to_end(gen: Generator[E, Any, R], on_event: Callable[[E], Any] | None = None) -> R:
    """Run ``gen`` to its end, passing each event to ``on_event``; return its return value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
