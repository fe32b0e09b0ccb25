"""The U-Net Train dock widget: pick layer pairs, set up the network, train, watch, save.

The widget is thin: it collects the layer pairs and the settings, runs
:func:`._train_job.training_job` (which drives :func:`napari_unet.training.loop.train_iter`) in
napari's ``thread_worker``, shows the events in a live plot, a label and napari's activity
dock, and turns the returned model into a registered model (selectable at once in the Segment
widget) and, on request, a model file. :meth:`TrainWidget.run` is what the Train button calls.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, FileEdit, Label, LineEdit, PushButton

from ..common.errors import UserInputError
from . import _model_registry
from ._layer_pairs import LayerPairs
from ._preview import TrainingPreview
from ._train_inputs import PairSource, channel_axis, check_sources
from ._train_job import DataReady, PreviewReady, training_job
from ._train_settings import (
    ArchitectureBox,
    HyperParameters,
    check_patch,
    import_torch_then,
    make_config,
)

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

_ERROR_STYLE = "color: #e8786e;"


class TrainWidget(Container):
    """U-Net Train: layer pairs, architecture with layer summary, hyper-parameters, Train/Stop,
    live loss/Dice plot, optional preview, and Save.

    Attributes
    ----------
    result : TrainResult or None
        The last finished run: ``result.model`` (the best model) and ``result.history``.
    worker : GeneratorWorker or None
        The running training job.
    confirm_overwrite : callable(Path) -> bool
        Asked before Save replaces an existing file (a dialog by default; replace it in tests
        or scripts).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self.result: Any = None
        self.worker: Any = None
        self.confirm_overwrite: Callable[[Path], bool] = _ask_overwrite
        self._stop = threading.Event()
        self._preview: TrainingPreview | None = None
        #: names of the prepared training pairs of the current run (slices get "[z]")
        self.training_data: tuple[str, ...] = ()
        self._config: Any = None
        self._sources: list[PairSource] = []
        self._pbar: Any = None
        # worker signals are handled in order through this queue: napari's progress bar
        # processes Qt events while it updates, which would otherwise re-enter the handlers
        self._pending: deque[Callable[[], None]] = deque()
        self._draining = False

        self.pairs = LayerPairs(viewer)
        self.architecture = ArchitectureBox()
        self.hyper = HyperParameters()
        self.model_name = LineEdit(value="", label="model name")
        self.model_name.native.setPlaceholderText("default: '<image> U-Net'")
        self.start_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.status = Label(value="")
        self.message = Label(value="")
        self.message.native.setWordWrap(True)
        from ._plot import TrainingPlot

        self.plot = TrainingPlot()
        plot_box = Container(labels=False)
        plot_box.native.layout().addWidget(self.plot.widget)
        self.save_path = FileEdit(mode="w", filter="*.safetensors", label="model file")
        self.save_button = PushButton(text="Save", enabled=False)
        self.extend(
            [
                _header("Training data"),
                self.pairs,
                _header("Architecture"),
                self.architecture,
                _header("Training"),
                self.hyper,
                Container(widgets=[self.model_name]),
                Container(
                    layout="horizontal", labels=False, widgets=[self.start_button, self.stop_button]
                ),
                self.status,
                plot_box,
                self.message,
                _header("Save"),
                Container(widgets=[self.save_path]),
                self.save_button,
            ]
        )
        self._connect()
        self._refresh_summary()

    # -- public actions -------------------------------------------------------------------
    def run(self) -> Any:
        """Start training on the chosen pairs with the current settings.

        Returns
        -------
        GeneratorWorker or None
            The started worker (its ``finished`` signal fires at the end), or None when the
            input is bad (the reason is shown in the widget and as a notification).
        """
        if self.worker is not None:
            self._show_error("training is already running: stop it first")
            return None
        try:
            sources = self.pairs.sources()
            config = make_config(self.architecture, self.hyper)
            check_sources(sources, config.ndim, config.patch_shape())
            check_patch(config)
        except UserInputError as err:
            self._show_error(str(err))
            return None
        self._start(sources, config)
        return self.worker

    def _on_start_from(self, *_: Any) -> None:
        """Show (and lock) the architecture of the model to start from."""
        import sys

        if self.architecture.init is None:
            self.architecture.lock_to(None)
            return
        if "torch" not in sys.modules:  # the model card reader imports torch: off the GUI thread
            import_torch_then(self._on_start_from)
            return
        from ..model.files import builtin_model_path, read_card

        card = read_card(builtin_model_path(self.architecture.init))
        self.architecture.lock_to(card["architecture"], card.get("task"))

    def stop(self) -> None:
        """Stop after the current batch; the best model so far is kept (``returned``)."""
        if self.worker is None:
            return
        self._stop.set()
        self.stop_button.enabled = False
        self.status.value = "stopping after this batch ..."

    def save(self, path: str | Path | None = None) -> Path | None:
        """Save the last trained model to ``path`` (default: the file field).

        An existing file is replaced only if :attr:`confirm_overwrite` says yes.

        Returns
        -------
        Path or None
            The written file, or None when nothing was saved (the reason is shown).
        """
        from ..model.files import save_model

        if self.result is None:
            self._show_error("nothing to save: train a model first")
            return None
        path = Path(path if path is not None else self.save_path.value).expanduser()
        if str(path) in ("", ".") or path.is_dir():
            self._show_error("choose a model file to save to (…/name.safetensors)")
            return None
        if not path.name.endswith(".safetensors"):
            path = path.with_name(path.name + ".safetensors")
        if path.exists() and not self.confirm_overwrite(path):
            self._show_info(f"not saved: {path} exists")
            return None
        try:
            written = save_model(self.result.model, path)
        except (UserInputError, OSError) as err:
            self._show_error(f"could not save {path}: {err}")
            return None
        self._show_info(f"saved {written}")
        return written

    @property
    def history(self) -> list[dict[str, float]]:
        """Per-epoch history of the last finished run (empty before)."""
        return [] if self.result is None else list(self.result.history)

    # -- wiring ---------------------------------------------------------------------------
    def _connect(self) -> None:
        self.start_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.stop)
        self.save_button.changed.connect(lambda: self.save())
        arch, hyper = self.architecture, self.hyper
        for w in (
            arch.dims,
            arch.task,
            arch.depth,
            arch.base_filters,
            arch.batch_norm,
            hyper.patch,
        ):
            w.changed.connect(self._refresh_summary)
        arch.depth.changed.connect(lambda d: setattr(hyper.patch, "step", 2**d))
        arch.start_from.changed.connect(self._on_start_from)
        self.pairs.changed.connect(self._refresh_summary)

    def _start(self, sources: list[PairSource], config: Any) -> None:
        from napari.qt.threading import GeneratorWorker, create_worker

        class _GracefulWorker(GeneratorWorker):
            """``quit`` (the activity dock's cancel) stops gracefully, keeping the best model."""

            def quit(inner) -> None:
                self.stop()

        self._stop = threading.Event()
        self._config, self._sources = config, sources
        self.result, self.training_data = None, ()
        self.save_button.enabled = False
        self.plot.reset()
        preview = None
        if self.hyper.preview.value:
            labels_layer = next(r.labels_combo.value for r in self.pairs.rows if r.source())
            self._preview = TrainingPreview(self._viewer, labels_layer, sources[0])
            preview = self._preview.spec(self.hyper.preview_every.value)
        worker = create_worker(
            training_job,
            sources,
            config,
            self._stop,
            init=self.architecture.init,
            ignore_label=self.hyper.ignore,
            preview=preview,
            _progress={"desc": "U-Net training"},
            _worker_class=_GracefulWorker,
            _start_thread=False,
            _connect={
                name: partial(self._in_order, handler)
                for name, handler in (
                    ("yielded", self._on_event),
                    ("returned", self._on_returned),
                    ("errored", self._on_errored),
                    ("finished", self._on_finished),
                )
            },
        )
        self.worker, self._pbar = worker, getattr(worker, "pbar", None)
        if self._pbar is not None:  # closed in _on_finished, after the last queued update
            worker.finished.disconnect(self._pbar.close)
        self.start_button.enabled = False
        self.stop_button.enabled = True
        self.status.value = f"reading {len(sources)} pair(s) ..."
        self._show_info("")
        worker.start()

    # -- worker events (GUI thread) -------------------------------------------------------
    def _in_order(self, handler: Callable[..., None], *args: Any) -> None:
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

    def _on_event(self, event: Any) -> None:
        from ..training.events import BatchEnd, EpochEnd

        if isinstance(event, BatchEnd):
            self.plot.add_batch(event.epoch, event.step, event.steps, event.loss)
            # throttled: napari's progress bar processes Qt events on every update
            if self.plot.redraw() or event.step == event.steps - 1:
                self.status.value = (
                    f"epoch {event.epoch + 1}/{self._config.epochs}, step {event.step + 1}/"
                    f"{event.steps}: loss {event.loss:.4f}"
                )
                self._update_progress(event)
        elif isinstance(event, EpochEnd):
            self.plot.add_epoch(event.epoch, event.train_loss, event.val_loss, event.val_dice)
            self.plot.redraw()
            best = " (best)" if event.is_best else ""
            self.status.value = (
                f"epoch {event.epoch + 1}/{event.epochs}: train loss {event.train_loss:.4f}, "
                f"val loss {event.val_loss:.4f}, val Dice {event.val_dice:.4f}{best}"
            )
        elif isinstance(event, DataReady):
            self.training_data = event.names
            self.status.value = f"training on {event.n_pairs} pair(s) ..."
        elif isinstance(event, PreviewReady) and self._preview is not None:
            self._preview.show(event)

    def _update_progress(self, event: Any) -> None:
        pbar = self._pbar
        if pbar is None:
            return
        total = event.steps * self._config.epochs
        if pbar.total != total:
            pbar.total = total
        description = f"U-Net training, epoch {event.epoch + 1}/{self._config.epochs}"
        if not pbar.desc.startswith(description):  # tqdm appends ": "
            pbar.set_description(description)
        pbar.n = event.epoch * event.steps + event.step
        pbar.update(1)

    def _on_returned(self, result: Any) -> None:
        if result.best_epoch < 0:  # stopped before the first epoch ended: nothing learnt
            self._show_info("stopped before the first epoch ended: no model kept")
            return
        self.result = result
        name = self.model_name.value.strip() or self._default_name()
        result.model.card = {
            **result.model.card,
            "name": name,
            "description": "Trained in napari on "
            + ", ".join(f"{s.image_name} / {s.labels_name}" for s in self._sources),
        }
        _model_registry.register_model(name, result.model)
        self.save_button.enabled = True
        how = "stopped" if result.stopped else "done"
        self._show_info(
            f"{how}: best epoch {result.best_epoch + 1}, validation Dice "
            f"{result.best_dice:.3f}. Model {name!r} is selectable in U-Net Segment."
        )

    def _on_errored(self, err: BaseException) -> None:
        if isinstance(err, UserInputError):
            self._show_error(str(err))
        elif isinstance(err, MemoryError):
            self._show_error("out of memory: use a smaller patch size, batch size or network")
        else:
            log.error("training failed", exc_info=err)
            self._show_error(f"training failed: {type(err).__name__}: {err}")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
        if self._preview is not None:
            self._preview.close()
        self.worker = self._pbar = self._preview = None
        self.start_button.enabled = True
        self.stop_button.enabled = False
        self.plot.redraw(force=True)
        if self.status.value.startswith(("reading", "stopping", "training on")):
            self.status.value = ""

    # -- helpers ------------------------------------------------------------------------------
    def _refresh_summary(self, *_: Any) -> None:
        import sys

        if "torch" not in sys.modules:  # first use: import torch off the GUI thread
            self.architecture.summary.value = "(computing the layer summary ...)"
            import_torch_then(self._refresh_summary)
            return
        channels, classes = self._io_channels()
        self.architecture.show_summary(self.hyper.patch.value, channels, classes)

    def _io_channels(self) -> tuple[int, int]:
        """Input channels and classes for the summary, from the first pair (cheap guesses)."""
        sources = self.pairs.sources()
        channels, classes = 1, 3
        if sources:
            try:
                axis = channel_axis(sources[0])
            except UserInputError:
                axis = None
            channels = 1 if axis is None else int(sources[0].image.shape[axis])
        if self.architecture.task.value == "semantic":
            labels = sources[0].labels if sources else None
            classes = int(np.max(labels)) + 1 if isinstance(labels, np.ndarray) else 2
            classes = max(classes, 2)
        return channels, classes

    def _default_name(self) -> str:
        sources = self.pairs.sources()
        return f"{sources[0].image_name} U-Net" if sources else "U-Net"

    def _show_error(self, text: str) -> None:
        from napari.utils.notifications import show_error

        self.message.native.setStyleSheet(_ERROR_STYLE)
        self.message.value = text
        show_error(text)

    def _show_info(self, text: str) -> None:
        self.message.native.setStyleSheet("")
        self.message.value = text
        if text:
            from napari.utils.notifications import show_info

            show_info(text)


def _header(text: str) -> Label:
    return Label(value=f"<b>{text}</b>")


def _ask_overwrite(path: Path) -> bool:
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        None,
        "Replace model file?",
        f"{path} already exists. Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


__all__ = ["TrainWidget"]
