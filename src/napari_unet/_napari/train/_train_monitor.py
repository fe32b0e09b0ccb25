"""What the Train dock shows while a run goes: status line, loss/Dice plot and progress bar.

:class:`TrainingMonitor` turns the events of :func:`._train_job.training_job` into text, plot
points and progress-bar steps, on the GUI thread. Redraws are throttled (the plot draws at most
every ``min_interval`` seconds, the status line and the progress bar follow it) so that drawing
never costs more than a few percent of the training time, even with software OpenGL.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from magicgui.widgets import Label

from .._dock import wrapping_label
from ._train_job import Comparing, DataReady, PreviewReady

#: status lines of a run in progress, cleared when the run ends
_TRANSIENT = ("reading", "stopping", "training on", "choosing", "comparing")


class TrainingMonitor:
    """The status line, the live plot and napari's progress bar of one Train dock.

    Attributes
    ----------
    status : magicgui.widgets.Label
        One line: what the run is doing now (wraps at the dock's width).
    plot : TrainingPlot
        Loss per batch and epoch, validation Dice per epoch, the tuned post-processing's AP.
    training_data : tuple of str
        Names of the prepared training pairs of the current run (slices get ``"[z]"``).
    """

    def __init__(self) -> None:
        from ._plot import TrainingPlot

        self.status: Label = wrapping_label()
        #: a lasting note on the run, e.g. that validation reuses the training image
        self.note: Label = wrapping_label()
        self.val_fraction = 0.0
        #: what the run validates on (:class:`DataReady`'s ``validation``; "" before it says)
        self.validation = ""
        self.plot = TrainingPlot()
        self.training_data: tuple[str, ...] = ()
        self.pbar: Any = None
        self.preview: Any = None
        self.epochs = 0

    def start(self, epochs: int, pbar: Any, n_pairs: int, val_fraction: float = 0.1) -> None:
        """A run of ``epochs`` epochs begins; ``pbar`` is napari's progress bar (or None)."""
        self.epochs, self.pbar, self.training_data = epochs, pbar, ()
        self.val_fraction, self.note.value, self.validation = val_fraction, "", ""
        self.plot.reset()
        self.status.value = f"reading {n_pairs} pair(s) ..."

    def on_event(self, event: Any) -> None:
        """Show one event of the training job."""
        from ...training.events import BatchEnd, EpochEnd
        from ...training.finishing.tune import TunedPostprocessing, TuneProgress

        if isinstance(event, BatchEnd):
            self.plot.add_batch(event.epoch, event.step, event.steps, event.loss)
            # throttled: napari's progress bar processes Qt events on every update
            if self.plot.redraw() or event.step == event.steps - 1:
                self.status.value = (
                    f"epoch {event.epoch + 1}/{self.epochs}, step {event.step + 1}/"
                    f"{event.steps}: loss {event.loss:.4f}"
                )
                self._update_progress(event)
        elif isinstance(event, EpochEnd):
            self.plot.add_epoch(event.epoch, event.train_loss, event.val_loss, event.val_dice)
            self.plot.redraw()
            best = " (best)" if event.is_best else ""
            self.status.value = (
                f"epoch {event.epoch + 1}/{event.epochs}: train loss {event.train_loss:.4f}, "
                f"validation loss {event.val_loss:.4f}, validation Dice "
                f"{event.val_dice:.4f}{best}"
            )
        elif isinstance(event, TuneProgress):
            self.status.value = (
                f"choosing the post-processing on the validation images ({event.done}/"
                f"{event.total}) ..."
            )
        elif isinstance(event, TunedPostprocessing):
            self.plot.add_postprocessing(event.ap50, event.mean_ap)
            self.plot.redraw(force=True)
            self.status.value = (
                f"post-processing chosen on {event.n_images} validation image(s) "
                f"[{event.seconds:.0f} s]: validation AP@0.5 {event.ap50:.4f}, mean AP "
                f"{event.mean_ap:.4f}"
            )
        elif isinstance(event, DataReady):
            self.training_data, self.validation = event.names, event.validation
            seen = f" ({event.seen_as})" if event.seen_as else ""
            self.status.value = f"training on {event.n_pairs} pair(s){seen} ..."
            if event.validation == "strip":
                self.note.value = (
                    "Note: one pair: the last quarter of its longest side is held back to "
                    "validate on, and to compare the new model with the one in use."
                )
            elif self.validates_on_training_data:
                self.note.value = (
                    "Note: validation reuses the training image (one pair, or validation 0): "
                    "the validation Dice is optimistic. Add a second pair to validate on "
                    "unseen data."
                )
        elif isinstance(event, PreviewReady) and self.preview is not None:
            self.preview.show(event)
        elif isinstance(event, Comparing):
            plural = "s" if event.n_images != 1 else ""
            self.status.value = (
                f"comparing the new model with the Segment model in use on {event.n_images} "
                f"held-back image{plural} ..."
            )

    def _update_progress(self, event: Any) -> None:
        pbar = self.pbar
        if pbar is None:
            return
        total = event.steps * self.epochs
        if pbar.total != total:
            pbar.total = total
        description = f"U-Net training, epoch {event.epoch + 1}/{self.epochs}"
        if not pbar.desc.startswith(description):  # tqdm appends ": "
            pbar.set_description(description)
        pbar.n = event.epoch * event.steps + event.step
        pbar.update(1)

    @property
    def validates_on_training_data(self) -> bool:
        """Whether the current run validates on its training pairs."""
        if self.validation:
            return self.validation == "training"
        return len(self.training_data) < 2 or self.val_fraction <= 0

    def stopping(self) -> None:
        """The user asked to stop."""
        self.status.value = "stopping after this batch ..."

    def finish(self) -> None:
        """The run ended: close the progress bar and preview, draw the last points."""
        if self.pbar is not None:
            self.pbar.close()
        if self.preview is not None:
            self.preview.close()
        self.pbar = self.preview = None
        self.plot.redraw(force=True)
        text = self.status.value
        if text.startswith(_TRANSIENT):
            self.status.value = ""
        elif text.startswith("epoch ") and ", step " in text:  # ended inside an epoch
            self.status.value = f"stopped at {text}"


class InOrder:
    """Calls worker-signal handlers one after the other, never inside each other.

    napari's progress bar processes Qt events while it updates, which would otherwise run the
    next handler (e.g. ``finished``) in the middle of the current one.
    """

    def __init__(self) -> None:
        self._pending: deque[Callable[[], None]] = deque()
        self._draining = False

    def __call__(self, handler: Callable[..., None], *args: Any) -> None:
        """Run ``handler(*args)`` after the handlers already running or queued."""
        self._pending.append(partial(handler, *args))
        if self._draining:
            return
        self._draining = True
        try:
            while self._pending:
                self._pending.popleft()()
        finally:
            self._draining = False
