"""The U-Net Train dock widget: pick layer pairs, set up the network, train, watch, save.

The widget is thin: it collects the layer pairs and the settings, runs
:func:`._train_job.training_job` (which drives :func:`napari_unet.training.loop.train_iter`) in
napari's ``thread_worker``, shows the events in a live plot, a label and napari's activity
dock, and turns the returned model into a registered model (offered at once in the Segment
widget) and, on request, a model file. The new model becomes the Segment model only if it beats
the one in use on the run's held-back (validation) images; the message says which is used and
why. With a single annotated image, the dock starts from the built-in model of its kind (a
fine-tune: nuclei for grey images, H&E for stained colour slides) until the user chooses
otherwise. :meth:`TrainWidget.run` is what the Train button calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, FileEdit, LineEdit, PushButton

from ...common.errors import UserInputError
from .. import _model_registry
from .._dock import Advanced, Dock, header, wrapping_label
from .._feedback import plain_message, show_message
from ._layer_pairs import LayerPairs
from ._model_save import ask_overwrite, save_trained
from ._network_summary import check_patch, import_torch_then, io_channels
from ._plot import follow_theme
from ._preview import TrainingPreview
from ._train_inputs import PairSource, check_sources
from ._train_job import NO_COMPARISON, HeldBackScores, training_job
from ._train_monitor import InOrder, TrainingMonitor
from ._train_settings import (
    START_BUILTIN,
    START_BUILTIN_HE,
    START_NEW,
    ArchitectureBox,
    HyperParameters,
    make_config,
)

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)


class TrainWidget(Dock):
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
        super().__init__()
        self._viewer = viewer
        self.result: Any = None
        self.worker: Any = None
        self.confirm_overwrite: Callable[[Path], bool] = ask_overwrite
        self._stop = threading.Event()
        self._config: Any = None
        self._sources: list[PairSource] = []
        self._in_order = InOrder()
        #: the held-back comparison of the current run, and the model compared with
        self._scores: HeldBackScores | None = None
        self._rival_name = ""
        #: "start from" follows the data until the user chooses (``_suggesting``: not the user)
        self._start_chosen = self._suggesting = False
        self._build()
        self.finish_layout()
        self._connect()
        self._default_start()
        self._refresh_summary()

    def _build(self) -> None:
        self.pairs = LayerPairs(self._viewer)
        self.architecture = ArchitectureBox()
        self.hyper = HyperParameters()
        self.model_name = LineEdit(value="", label="model name")
        self.model_name.native.setPlaceholderText("default: '<image> U-Net'")
        self.start_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.monitor = TrainingMonitor()
        self.status, self.plot = self.monitor.status, self.monitor.plot
        follow_theme(self.plot, self._viewer)  # napari's colours, also after a theme change
        self.message = wrapping_label()
        plot_box = Container(labels=False)
        plot_box.native.layout().addWidget(self.plot.widget)
        self.save_path = FileEdit(mode="w", filter="*.safetensors", label="model file")
        self.save_button = PushButton(text="Save", enabled=False)
        self.export_button = PushButton(
            text="Export to BioImage.IO", enabled=False,
            tooltip="write the model as a BioImage.IO package (.zip beside the model file), "
            "tested with bioimageio.core; needs napari-unet[bioimageio]",
        )  # fmt: skip
        self.advanced = Advanced()
        self._build_advanced()
        self.extend(
            [
                header("Training data"),
                self.pairs,
                Container(
                    widgets=[
                        self.architecture.start_from,
                        self.hyper.epochs,
                        self.hyper.preview,
                        self.model_name,
                    ]
                ),
                Container(
                    layout="horizontal", labels=False, widgets=[self.start_button, self.stop_button]
                ),
                self.status,
                self.monitor.note,
                self.message,
                # Save above the plot: on a 1366x768 screen it stays in view after a run,
                # when the status, note and message lines have grown
                Container(widgets=[self.save_path]),  # a row of its own: room for the path
                Container(
                    layout="horizontal",
                    labels=False,
                    widgets=[self.save_button, self.export_button],
                ),
                plot_box,
                self.advanced,
            ]
        )

    def _build_advanced(self) -> None:
        """The collapsed *Advanced* rows; add a setting with ``self.advanced.add(widget)``."""
        self.advanced.add(header("Network"), self.architecture, header("Training"), self.hyper)

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

    def stop(self) -> None:
        """Stop after the current batch; the best model so far is kept (``returned``)."""
        if self.worker is None:
            return
        self._stop.set()
        self.stop_button.enabled = False
        self.monitor.stopping()

    def save(self, path: str | Path | None = None) -> Path | None:
        """Save the last trained model to ``path`` (default: the file field).

        An existing file is replaced only if :attr:`confirm_overwrite` says yes.

        Returns
        -------
        Path or None
            The written file, or None when nothing was saved (the reason is shown).
        """
        if self.result is None:
            self._show_error("nothing to save: train a model first")
            return None
        target = path if path is not None else self.save_path.value
        written, message = save_trained(self.result.model, target, self.confirm_overwrite)
        show_message(self.message, message, error=written is None and "not saved" not in message)
        return written

    def export(self, path: str | Path | None = None) -> Any:
        """Export the last trained model as a BioImage.IO package (``.zip``), in a thread.

        Returns
        -------
        worker or None
            The started worker (``finished`` fires at the end), or None (reason shown).
        """
        from .._zoo_export import start_export

        if self.result is None:
            self._show_error("nothing to export: train a model first")
            return None
        target = path if path is not None else self.save_path.value

        def report(message: str, error: bool) -> None:
            show_message(self.message, message, error=error)

        return start_export(self.result.model, target, report)

    @property
    def history(self) -> list[dict[str, float]]:
        """Per-epoch history of the last finished run (empty before)."""
        return [] if self.result is None else list(self.result.history)

    # -- wiring ---------------------------------------------------------------------------
    def _connect(self) -> None:
        self.start_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.stop)
        self.save_button.changed.connect(lambda: self.save())
        self.export_button.changed.connect(lambda: self.export())
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
        arch.start_from.changed.connect(arch.follow_start_from)
        arch.start_from.changed.connect(self._on_start_from)
        self.pairs.changed.connect(self._refresh_summary)
        self.pairs.changed.connect(self._default_start)
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed):
            event.connect(self._default_start)

    def _default_start(self, *_: Any) -> None:
        """Until the user chooses: fine-tune a built-in model on a single annotated image (the
        nuclei model for one 2D single-channel pair, the H&E model for one stained colour
        slide), train a new network otherwise."""
        if self._start_chosen or self.worker is not None:
            return
        choice = _start_for(self.pairs.sources())
        if self.architecture.start_from.value != choice:
            self._suggesting = True
            try:
                self.architecture.start_from.value = choice
            finally:
                self._suggesting = False

    def _on_start_from(self, value: str) -> None:
        """The user chose (or the data suggested) where to start: a fine-tune's settings."""
        self._start_chosen = self._start_chosen or not self._suggesting
        self.hyper.suit(fine_tune=value != START_NEW)

    def _start(self, sources: list[PairSource], config: Any) -> None:
        from napari.qt.threading import GeneratorWorker, create_worker

        class _GracefulWorker(GeneratorWorker):
            """``quit`` (the activity dock's cancel) stops gracefully, keeping the best model."""

            def quit(inner) -> None:
                self.stop()

        self._stop = threading.Event()
        self._config, self._sources = config, sources
        self.result = None
        compare_with, self._rival_name, self._scores = _segment_model_in_use(sources)
        self.save_button.enabled = self.export_button.enabled = False
        preview = None
        if self.hyper.preview.value:
            labels_layer = next(r.labels_combo.value for r in self.pairs.rows if r.source())
            self.monitor.preview = TrainingPreview(self._viewer, labels_layer, sources[0])
            preview = self.monitor.preview.spec(self.hyper.preview_every.value)
        worker = create_worker(
            training_job,
            sources,
            config,
            self._stop,
            init=self.architecture.init,
            ignore_label=self.hyper.ignore,
            preview=preview,
            compare_with=compare_with,
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
        self.worker, pbar = worker, getattr(worker, "pbar", None)
        if pbar is not None:  # closed in _on_finished, after the last queued update
            worker.finished.disconnect(pbar.close)
        self.monitor.start(config.epochs, pbar, len(sources), config.val_fraction)
        self.start_button.enabled = False
        self.stop_button.enabled = True
        self._show_info("")
        worker.start()

    # -- worker events (GUI thread, in order: see InOrder) -----------------------------------
    def _on_event(self, event: Any) -> None:
        if isinstance(event, HeldBackScores):
            self._scores = event
        else:
            self.monitor.on_event(event)

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
        scores = self._scores or HeldBackScores(None, None, 0, "nothing was held back")
        # offered in every Segment dock; used there only if it beat the model in use
        _model_registry.register_model(name, result.model, select=scores.beats)
        self.save_button.enabled = self.export_button.enabled = True
        how = "stopped" if result.stopped else "done"
        same = (
            " (on the training image)"
            if self.monitor.validates_on_training_data
            else " (on a held-back strip)"
            if self.monitor.validation == "strip"
            else ""
        )
        verdict = scores.describe(name, self._rival_name, "U-Net Segment's Model box")
        self._show_info(
            f"{how}: best epoch {result.best_epoch + 1}, validation Dice "
            f"{result.best_dice:.3f}{same}. U-Net Segment: {verdict}."
        )

    def _on_errored(self, err: BaseException) -> None:
        if isinstance(err, MemoryError):
            self._show_error("out of memory: use a smaller patch size, batch size or network")
        else:
            if not isinstance(err, UserInputError):
                log.error("training failed", exc_info=err)
            self._show_error(plain_message(err))

    def _on_finished(self) -> None:
        self.monitor.finish()
        self.worker = None
        self.start_button.enabled = True
        self.stop_button.enabled = False

    # -- helpers ------------------------------------------------------------------------------
    def _refresh_summary(self, *_: Any) -> None:
        import sys

        if "torch" not in sys.modules:  # first use: import torch off the GUI thread
            self.architecture.summary.value = "(computing the layer summary ...)"
            import_torch_then(self._refresh_summary)
            return
        channels, classes = io_channels(self.pairs.sources(), self.architecture.task.value)
        self.architecture.show_summary(self.hyper.patch.value, channels, classes)

    def _default_name(self) -> str:
        """``"<image> U-Net"``, numbered (``" 2"``, ...) if a model of that name exists."""
        sources = self.pairs.sources()
        return _model_registry.unique_name(f"{sources[0].image_name} U-Net" if sources else "U-Net")

    @property
    def training_data(self) -> tuple[str, ...]:
        """Names of the prepared training pairs of the current run (slices get ``"[z]"``)."""
        return self.monitor.training_data

    def _show_error(self, text: str) -> None:
        show_message(self.message, text, error=True)

    def _show_info(self, text: str) -> None:
        show_message(self.message, text)


def _start_for(sources: list[PairSource]) -> str:
    """Where the Train dock starts by default: a fine-tune of the built-in model of the image's
    kind for a single annotated 2D image (rows repeating a pair count once) that is grey
    (``nuclei``) or a stained colour slide (``nuclei-he``, as Segment would choose), else a
    new network."""
    from ._network_summary import io_channels

    if len({(s.image_name, s.labels_name) for s in sources}) != 1:
        return START_NEW
    source = sources[0]
    if len(source.labels.shape) != 2:
        return START_NEW
    if source.rgb:
        return START_BUILTIN_HE if _stained_slide(source) else START_NEW
    return START_BUILTIN if io_channels(sources, "instance")[0] == 1 else START_NEW


def _stained_slide(source: PairSource) -> bool:
    """Whether an RGB layer is a stained slide (Segment's built-in choice: ``nuclei-he``)."""
    from ...inference.images.modality import is_stained

    return source.rgb and is_stained(source.image, "YXC")


def _segment_model_in_use(sources: list[PairSource]) -> tuple[Any, str, HeldBackScores | None]:
    """The Segment model a new model is compared with: ``(compare_with, name, scores)``.

    ``compare_with`` is the model as :func:`napari_unet.segment` takes it (None: the built-in
    model), or :data:`NO_COMPARISON` with ``scores`` saying why when it cannot be used. The
    built-in choice runs the H&E model on stained slides, and its name says so when the
    first of ``sources`` is one.
    """
    source, model_file = _model_registry.current_choice() or (_model_registry.BUILTIN, "")
    try:
        model = _model_registry.chosen_model(source, model_file)
    except UserInputError as err:
        why = f"the Segment model in use cannot be loaded ({err})"
        return NO_COMPARISON, source, HeldBackScores(None, None, 0, why)
    name = _model_registry.model_name(source, model)
    if model is None and sources and _stained_slide(sources[0]):
        from ...inference.pipeline import STAINED_MODEL

        name = f"{name} ({STAINED_MODEL} on stained slides)"
    return model, name, None


__all__ = ["TrainWidget"]
