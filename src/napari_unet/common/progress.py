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


def run_with_progress(
    gen: Generator[E, Any, R], progress: bool | Callable[[E], Any] | None = None
) -> R:
    """Drive ``gen`` to the end, reporting its events; returns its return value.

    ``progress``: ``True`` shows one tqdm bar on stderr that follows the events' ``stage``,
    ``done`` and ``total``; a callable receives every event.
    """
    if progress is True:
        return _run_with_tqdm(gen)
    return run_to_end(gen, progress if callable(progress) else None)


def _run_with_tqdm(gen, **tqdm_kwargs):
    """Drive ``gen`` with one tqdm bar on stderr that follows its stages."""
    from tqdm.auto import tqdm

    shown = None
    try:
        event = next(gen)  # the inputs are checked before the first event: no bar for an error
    except StopIteration as stop:
        return stop.value
    with tqdm(total=0, unit="step", **tqdm_kwargs) as bar:
        while True:
            if (event.stage, event.total) != shown:
                shown = (event.stage, event.total)
                bar.set_description(event.stage, refresh=False)
                bar.reset(total=event.total)
            bar.update(event.done - bar.n)
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
