"""Driving the progress generators of the core.

Long work in the engine is a generator that yields small progress events and
returns its result. The napari widgets run such a generator in a thread worker; everything
else runs it to the end with :func:`run_to_end`. :func:`relay` passes one generator's events on
as another kind of event (``yield from`` with a translation).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

E = TypeVar("E")
F = TypeVar("F")
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


def relay(gen: Generator[E, Any, R], translate: Callable[[E], F]) -> Generator[F, None, R]:
    """Yield ``translate(event)`` for each event of ``gen``; return ``gen``'s return value.

    Closing the relay (a cancelled run) closes ``gen`` at once, as ``yield from`` would.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        try:
            yield translate(event)
        except GeneratorExit:
            gen.close()
            raise
