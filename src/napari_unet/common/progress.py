"""Driving the progress generators of the core.

Long work in the engine is a generator that yields small progress events and
returns its result. The napari widgets run such a generator in a thread worker; everything
else runs it to the end with :func:`run_to_end`. :func:`relay` passes one generator's events on
as another kind of event (``yield from`` with a translation).

An engine counts each pass of a stage from 0 (the automatic object size looks at an image
several times, each look under the one stage ``"measuring objects"``); :class:`StageCounts`
turns those counts into one per stage that only goes up, for the command line's progress bar
and the napari docks alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

E = TypeVar("E")
F = TypeVar("F")
R = TypeVar("R")


class StageCounts:
    """Per stage, one count of steps over all its passes: ``done`` never goes down.

    A pass of a stage ends where the engine's count restarts (``done`` goes down) or its
    ``total`` changes; the steps that pass finished are added to the next pass's ``done`` and
    ``total`` (``1/3 ... 3/3 ... 1/2 ... 0/3`` is shown as ``1/3 ... 3/3 ... 4/5 ... 5/8``).
    The total shown never goes down either.
    """

    def __init__(self) -> None:
        #: stage -> [steps of its earlier passes, done and total of its current pass, shown total]
        self._stages: dict[str, list[int]] = {}

    def count(self, stage: str, done: int, total: int) -> tuple[int, int]:
        """``(done, total)`` of ``stage`` over all its passes so far."""
        base, last_done, last_total, shown = self._stages.setdefault(stage, [0, 0, total, 0])
        if done < last_done or total != last_total:  # a new pass of the stage
            base += last_done
        total_shown = max(shown, base + total)
        self._stages[stage] = [base, done, total, total_shown]
        return base + done, total_shown


def run_to_end(gen: Generator[E, Any, R], on_event: Callable[[E], Any] | None = None) -> R:
    """Run ``gen`` to its end, passing each event to ``on_event``; return its return value.

    An exception outside ``gen`` (a Ctrl-C landing in ``on_event``, an error there) closes
    ``gen`` before it propagates, so the work's own clean-up (temporary stores) runs at once
    rather than whenever the suspended generator is collected (never, if the process then
    leaves with ``os._exit``).
    """
    with _closing_on_error(gen):
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if on_event is not None:
                on_event(event)


@contextlib.contextmanager
def _closing_on_error(gen: Generator) -> Iterator[None]:
    try:
        yield
    except BaseException:
        gen.close()  # a no-op if the exception came from inside gen (it has finished)
        raise


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

    ``progress``: ``True`` shows a tqdm bar on stderr per stage of the events (``stage``,
    ``done`` and ``total``), counted up over the stage's passes (:class:`StageCounts`); a
    callable receives every event.
    """
    if progress is True:
        return _run_with_tqdm(gen)
    return run_to_end(gen, progress if callable(progress) else None)


#: stages that are not work to count (the last event of a segmentation carries its report)
_UNCOUNTED = ("done",)


def _run_with_tqdm(gen, **tqdm_kwargs):
    """Drive ``gen`` with one tqdm bar on stderr that follows its stages, counted up over each
    stage's passes; the bar appears with the first counted event (no empty ``0step`` bar)."""
    from tqdm.auto import tqdm

    try:
        event = next(gen)  # the inputs are checked before the first event: no bar for an error
    except StopIteration as stop:
        return stop.value
    counts = StageCounts()
    # no tqdm.contrib.logging redirect: under it a Ctrl-C or SIGTERM left the run finishing
    # and tqdm's __del__ raising (tests/test_interrupts.py)
    with _closing_on_error(gen):
        return _drive(gen, event, counts, tqdm, tqdm_kwargs)


def _drive(gen, event, counts: StageCounts, tqdm, tqdm_kwargs: dict):
    bar, shown = None, None
    try:
        while True:
            if event.stage not in _UNCOUNTED:
                done, total = counts.count(event.stage, event.done, event.total)
                if bar is None:
                    bar = tqdm(total=total, desc=event.stage, unit="step", **tqdm_kwargs)
                elif shown is not None and event.stage != shown[0]:
                    bar.refresh()  # the stage's last count, shown before the next stage's
                    bar.set_description(event.stage, refresh=False)
                    bar.reset(total=total)
                elif bar.total != total:
                    bar.total = total
                    bar.refresh()
                shown = (event.stage, total)
                bar.update(done - bar.n)
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
    finally:
        if bar is not None:
            bar.close()
