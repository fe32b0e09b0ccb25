"""The live training plot: loss (per batch and per epoch), validation Dice per epoch, and the
validation AP@0.5 and mean AP of the post-processing chosen at the end of the run.

A matplotlib figure on a Qt canvas; matplotlib is imported when the plot is made (when the
Train widget opens), not when napari starts. Redraws are throttled: :meth:`TrainingPlot.redraw`
draws at most every ``min_interval`` seconds unless forced, and at most every ``COST_FACTOR``
times as long as the last draw took, so that drawing takes at most ~1/COST_FACTOR of the time
(a draw takes ~0.1-0.2 s on a loaded 2-core machine with software rendering, ~20 ms on a
desktop) and a fast stream of batches never stalls napari's event loop or slows training.

The plot takes napari's colours (:meth:`TrainingPlot.set_theme`, from
``napari.utils.theme.get_theme``): the dock's background, the theme's text colour for labels,
ticks and frame, and line colours that stand out on it; :func:`follow_theme` re-colours it when
the viewer's theme changes.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

#: line colours (batch/train loss, validation loss, Dice, AP@0.5, mean AP) per kind of theme:
#: matplotlib's "tab" colours on a light background, lighter tints of them on a dark one
LINE_COLOURS = {
    "light": {
        "batch": "#1f77b4", "train": "#1f77b4", "val": "#ff7f0e", "dice": "#2ca02c",
        "ap50": "#d62728", "mean_ap": "#9467bd",
    },
    "dark": {
        "batch": "#6cb4f0", "train": "#6cb4f0", "val": "#ffa54f", "dice": "#6fdc6f",
        "ap50": "#ff6b6b", "mean_ap": "#c9a7f2",
    },
}  # fmt: skip


class TrainingPlot:
    """Two stacked axes against the epoch: losses on top, validation Dice below.

    Attributes
    ----------
    widget : QWidget
        The canvas, to put in a layout.
    batch_x, batch_loss : list of float
        Every batch's loss, at ``epoch + (step + 1) / steps``.
    epoch_x, train_loss, val_loss, val_dice : list of float
        One value per finished epoch, at ``epoch + 1``.
    ap50, mean_ap : float or None
        Validation scores of the tuned post-processing, drawn at the last epoch.
    """

    #: the pause between two redraws is at least this many times the last draw's duration
    COST_FACTOR = 20.0

    def __init__(self, min_interval: float = 0.5) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.min_interval = min_interval
        self._last_draw = 0.0
        self._draw_seconds = 0.0  # how long the last draw took
        # 260 px high: with the Save row below it, the Train dock fits a 1366x768 screen
        figure = Figure(figsize=(3.6, 2.6))  # fixed margins: a layout engine doubles draw time
        figure.subplots_adjust(left=0.2, right=0.96, top=0.97, bottom=0.17, hspace=0.1)
        self.figure = figure
        self.ax_loss, self.ax_dice = figure.subplots(2, 1, sharex=True)
        self.widget = FigureCanvasQTAgg(figure)
        self.widget.setMinimumHeight(200)
        self.widget.setMinimumWidth(200)
        self._canvas_draw = self.widget.draw
        self.widget.draw = self._timed_draw  # draw_idle's deferred draw goes through it
        self._lines: dict[str, Any] = {
            "batch": self.ax_loss.plot([], [], lw=0.8, alpha=0.45, label="batch")[0],
            "train": self.ax_loss.plot([], [], "o-", ms=3, label="train")[0],
            "val": self.ax_loss.plot([], [], "s-", ms=3, label="validation")[0],
            "dice": self.ax_dice.plot([], [], "o-", ms=3, label="Dice")[0],
            "ap50": self.ax_dice.plot([], [], "*", ms=7, label="AP@0.5")[0],
            "mean_ap": self.ax_dice.plot([], [], "D", ms=4, label="mean AP")[0],
        }
        self.ax_loss.set_ylabel("loss")
        self.ax_dice.set_ylabel("validation")
        self.ax_dice.set_xlabel("epoch")
        self.ax_dice.set_ylim(0, 1)
        for ax in (self.ax_loss, self.ax_dice):
            ax.tick_params(labelsize="x-small")
        self.colours: dict[str, str] = {}
        self.set_theme(background="#ffffff", text="#000000", grid="#b0b0b0", kind="light")
        self.reset()

    def set_theme(self, *, background: str, text: str, grid: str, kind: str = "dark") -> None:
        """Colour the plot: ``background`` behind it, ``text`` for words, ticks and frame,
        ``grid`` for the grid lines, and the lines for a ``kind`` ("dark"/"light") background.

        Draws at once (a theme change is rare).
        """
        colours = LINE_COLOURS["light" if kind == "light" else "dark"]
        self.colours = {"background": background, "text": text, "grid": grid, **colours}
        self.figure.set_facecolor(background)
        for name, line in self._lines.items():
            line.set_color(colours[name])
        for ax, corner in ((self.ax_loss, "upper right"), (self.ax_dice, "lower right")):
            ax.set_facecolor(background)
            ax.tick_params(colors=text, which="both")
            ax.yaxis.label.set_color(text)
            ax.xaxis.label.set_color(text)
            for spine in ax.spines.values():
                spine.set_color(text)
            ax.grid(True, color=grid, alpha=0.5, linewidth=0.6)
            ax.legend(  # made again: its keys take the lines' new colours
                loc=corner, fontsize="x-small", facecolor=background, edgecolor=grid,
                labelcolor=text,
            )  # fmt: skip
        self.widget.draw_idle()

    def set_napari_theme(self, theme_id: str) -> None:
        """Colour the plot like napari's theme ``theme_id`` (``viewer.theme``: "dark", ...)."""
        from napari.utils.theme import get_theme

        theme = get_theme(theme_id)
        self.set_theme(
            background=theme.background.as_hex(),
            text=theme.text.as_hex(),
            grid=theme.highlight.as_hex(),
            kind=theme.type,
        )

    def reset(self) -> None:
        """Forget all data (a new run starts)."""
        had_data = bool(getattr(self, "batch_x", True))
        self.batch_x: list[float] = []
        self.batch_loss: list[float] = []
        self.epoch_x: list[float] = []
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []
        self.val_dice: list[float] = []
        self.ap50: float | None = None
        self.mean_ap: float | None = None
        if had_data:
            self.redraw(force=True)

    def add_batch(self, epoch: int, step: int, steps: int, loss: float) -> None:
        self.batch_x.append(epoch + (step + 1) / steps)
        self.batch_loss.append(loss)

    def add_epoch(self, epoch: int, train_loss: float, val_loss: float, val_dice: float) -> None:
        self.epoch_x.append(epoch + 1)
        self.train_loss.append(train_loss)
        self.val_loss.append(val_loss)
        self.val_dice.append(val_dice)

    def add_postprocessing(self, ap50: float, mean_ap: float) -> None:
        """The validation scores of the post-processing chosen after the last epoch."""
        self.ap50, self.mean_ap = ap50, mean_ap

    def redraw(self, force: bool = False) -> bool:
        """Update the lines and draw, at most every ``min_interval`` s unless ``force``.

        Returns
        -------
        bool
            Whether it drew.
        """
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval:
            return False
        self._lines["batch"].set_data(self.batch_x, self.batch_loss)
        self._lines["train"].set_data(self.epoch_x, self.train_loss)
        self._lines["val"].set_data(self.epoch_x, self.val_loss)
        self._lines["dice"].set_data(self.epoch_x, self.val_dice)
        at = self.epoch_x[-1:] if self.ap50 is not None else []
        self._lines["ap50"].set_data(at, [self.ap50] if at else [])
        self._lines["mean_ap"].set_data(at, [self.mean_ap] if at else [])
        self.ax_loss.relim()
        self.ax_loss.autoscale_view()
        self.ax_dice.set_xlim(0, max([1.0, *self.batch_x, *self.epoch_x]))
        self._last_draw = now
        self.widget.draw_idle()  # in its own turn of the event loop, timed by _timed_draw
        return True

    def _timed_draw(self) -> None:
        """The canvas's ``draw``, remembering how long it took."""
        start = time.monotonic()
        self._canvas_draw()
        self._draw_seconds = time.monotonic() - start

    @property
    def interval(self) -> float:
        """Seconds between two unforced redraws: ``min_interval``, longer if drawing is slow."""
        return max(self.min_interval, self.COST_FACTOR * self._draw_seconds)


def follow_theme(plot: TrainingPlot, viewer: Any) -> None:
    """Colour ``plot`` like ``viewer``'s theme now and whenever the theme changes.

    Stops following when the plot's canvas is deleted (napari outlives a closed dock).
    """
    plot.set_napari_theme(viewer.theme)
    on_change = partial(_on_theme_changed, plot, viewer)
    viewer.events.theme.connect(on_change)
    plot.widget.destroyed.connect(lambda *_: viewer.events.theme.disconnect(on_change))


def _on_theme_changed(plot: TrainingPlot, viewer: Any, _event: Any = None) -> None:
    plot.set_napari_theme(viewer.theme)
