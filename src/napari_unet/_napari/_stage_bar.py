"""A napari progress bar that follows the stages of a job's progress events.

napari's ``progress.update`` pumps the Qt event loop, so the next queued event may be handled
while the bar is still showing the previous one. :class:`StageBar` keeps the events in order:
an event that arrives during an update waits, and only the newest waiting event is shown next.

The engine counts the steps of each pass of a stage: the automatic object size looks at the
image once, twice or three times, each look a prediction and a post-processing counted from 0
under the one stage ``"measuring objects"`` (``1/3 ... 3/3 ... 1/2 ... 0/3``).
:class:`~napari_unet.common.progress.StageCounts` turns those into one count per stage that
only goes up (``1/3 ... 3/3 ... 4/5 ... 5/8``): the steps of the earlier passes are added to the
later ones.
"""

from __future__ import annotations

from typing import Any

from ..common.progress import StageCounts

__all__ = ["StageBar", "StageCounts"]


class StageBar:
    """One napari progress bar: per stage, ``done`` of ``total`` steps.

    Parameters
    ----------
    title : str
        The bar's first description, e.g. ``"U-Net Segment nuclei"``.
    prefix : str
        Put before each stage's name in the description, e.g. ``"U-Net Segment"``.
    """

    def __init__(self, title: str, prefix: str) -> None:
        from napari.utils import progress

        self._bar = progress(total=0, desc=title)
        self._prefix = prefix
        self._stage: str | None = None
        self._busy = False
        self._waiting: tuple[str, int, int] | None = None

    def show(self, stage: str, done: int, total: int) -> None:
        """Show ``done`` of ``total`` steps of ``stage`` (a new stage restarts the count)."""
        self._waiting = (stage, done, total)
        if self._busy:  # called from inside an update: shown when that update returns
            return
        self._busy = True
        try:
            while self._waiting is not None and self._bar is not None:
                (stage, done, total), self._waiting = self._waiting, None
                self._show(stage, done, total)
        finally:
            self._busy = False

    def _show(self, stage: str, done: int, total: int) -> None:
        bar = self._bar
        if self._stage != stage:
            self._stage = stage
            bar.n = 0
            bar.set_description(f"{self._prefix}: {stage}")
        if bar.total != total:  # a stage whose total grows (StageCounts) keeps its count
            bar.total = total
        bar.update(done - bar.n)

    @property
    def progress(self) -> Any:
        """The napari progress object (``None`` once closed)."""
        return self._bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
