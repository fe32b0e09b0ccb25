"""Correct and retrain: fine-tune the model behind a Segment result on the user's corrections.

The human-in-the-loop cycle of Cellpose 2: segment, paint corrections into the result layer
(fix merged or split objects, erase false ones, draw missed ones), press **Retrain on
corrections**, segment again with the new model. The model that produced the result (built-in,
file or trained in this session) is fine-tuned by the training engine
(:func:`~napari_unet._napari.train._train_job.training_job`, which calls
:func:`napari_unet.training.loop.train_iter`) with a fine-tuning learning rate on every corrected result of that model in the viewer. Where
the corrections are sparse (they and the objects they touch cover less than half of the image)
only the corrected area, widened by a margin, counts as annotated; elsewhere the unchecked
prediction would be learnt as truth. The result retrained on is the one the user edited: a new
result written beside it (the answer "No" to replacing edited labels) leaves the choice alone.

The new model is registered under a new name, which every Segment dock offers. It becomes the
Segment model only when it beats the model it was fine-tuned from on held-back corrected images
(with two or more corrected images, the run holds one back and both models segment it as
Segment would, :class:`~napari_unet._napari.train._train_job.HeldBackScores`); otherwise the
user picks it. The status and a notification say which model is used and why. **Undo retrain** makes every Segment dock
use the model before the retraining again.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, SpinBox

from .. import _model_registry as registry
from .._dock import wrapping_label
from .._feedback import report_error, report_failure, show_message
from .._layers import layer_array
from ..train._train_inputs import PairSource
from ..train._train_job import Comparing, HeldBackScores, model_task, retrain_augment
from ..train._train_monitor import InOrder
from ..train._train_settings import (
    FINE_TUNE_EPOCHS,
    FINE_TUNE_LR,
    RETRAIN_EPOCHS,
    RETRAIN_LAYERS,
    RETRAIN_LR,
    RETRAIN_STEPS,
)
from . import _results

__all__ = ["FINE_TUNE_EPOCHS", "FINE_TUNE_LR", "RetrainBox", "correction_region"]

#: corrections covering more than this fraction of an image make the whole image annotated
SPARSE_FRACTION = 0.5
#: pixels of context kept around corrected objects in a sparse correction
MARGIN = 12


def correction_region(labels: np.ndarray, changed: np.ndarray) -> np.ndarray | None:
    """Where a corrected result counts as annotated: None (all of it) unless sparse.

    Parameters
    ----------
    labels : ndarray of int, shape (..., Y, X)
        The corrected labels.
    changed : ndarray of bool, same shape
        Pixels the user changed.

    Returns
    -------
    ndarray of bool or None
        The changed pixels and the objects they touch, widened by :data:`MARGIN` pixels;
        None when that covers more than :data:`SPARSE_FRACTION` of the image.
    """
    from scipy import ndimage

    touched = np.unique(labels[changed])
    area = changed | np.isin(labels, touched[touched != 0])
    if not area.any():
        return None
    distance = ndimage.distance_transform_edt(~area)
    region = distance <= MARGIN
    return None if region.mean() > SPARSE_FRACTION else region


class RetrainBox(Container):
    """The Segment dock's *Correct and retrain* rows: result, epochs, Retrain / Stop / Undo
    retrain, status.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where the corrected results are (possibly napari's plugin proxy).
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self.result = ComboBox(
            label="Corrected result", choices=self._result_choices, nullable=True,
            tooltip="a U-Net Segment result you have corrected by painting (paint, fill, "
            "erase); its model is fine-tuned on every corrected result it produced",
        )  # fmt: skip
        self.epochs = SpinBox(
            label="Retrain epochs", value=RETRAIN_EPOCHS, min=1, max=10_000,
            tooltip=f"passes of {RETRAIN_STEPS} batches over the corrected images; more learn "
            "more and take longer",
        )  # fmt: skip
        self.learning_rate = FloatSpinBox(
            label="Retrain learning rate", value=RETRAIN_LR, min=1e-6, max=1e-2, step=1e-5,
            tooltip="fine-tuning learning rate (AdamW) of the decoder; the encoder is kept",
        )  # fmt: skip
        self.learning_rate.native.setDecimals(6)
        self.retrain_button = PushButton(text="Retrain on corrections")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.undo_button = PushButton(
            text="Undo retrain", enabled=False,
            tooltip="every Segment dock uses the model from before the last retraining again",
        )  # fmt: skip
        self.status = wrapping_label()
        self.worker: Any = None
        #: the model of the last finished retraining, and its registered name
        self.model: Any = None
        self.model_name = ""
        #: the last retraining's held-back comparison with the model it started from
        self.scores: HeldBackScores | None = None
        #: the Segment dock's (model source, model file) of the model last retrained, and its
        #: name (what Undo retrain goes back to); of the run in progress in ``_retraining``
        self._parent: tuple[str, str] = ("", "")
        self._parent_name = ""
        self._retraining: tuple[tuple[str, str], str] = (("", ""), "")
        self._stop = threading.Event()
        self._in_order = InOrder()
        self._epochs = 0
        self._first_batch: float | None = None
        super().__init__(
            labels=False,
            widgets=[
                Container(widgets=[self.result, self.epochs]),
                Container(
                    layout="horizontal",
                    labels=False,
                    widgets=[self.retrain_button, self.stop_button, self.undo_button],
                ),
                self.status,
            ],
        )
        self.margins = (0, 0, 0, 0)
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._refresh)
        self.retrain_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.stop)
        self.undo_button.changed.connect(self.undo)

    def _result_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [
            (ly.name, ly) for ly in self._viewer.layers if _results.result_record(ly) is not None
        ]

    def _refresh(self, _event: Any = None) -> None:
        self.result.reset_choices()

    def select(self, layer: Any) -> None:
        """Offer ``layer`` (a new Segment result) as the result to correct, unless the
        result chosen is one the user edited and ``layer`` is not (e.g. the result written
        beside it when the user kept the edits)."""
        self._refresh()
        chosen = self.result.value
        if chosen is not None and _results.was_edited(chosen) and not _results.was_edited(layer):
            return
        self._choose(layer)

    def _choose(self, layer: Any) -> None:
        for _name, choice in self._result_choices():
            if choice.unique_id == layer.unique_id:
                self.result.value = choice

    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self, *_: Any) -> Any:
        """Fine-tune the model of the chosen result on the corrections; returns the worker."""
        from napari.qt.threading import GeneratorWorker, create_worker

        from ...common.errors import UserInputError
        from ...training.config import TrainConfig
        from ..train._train_job import training_job

        if self.worker is not None:
            return self.worker
        try:
            record, sources = self._sources()
            init = _trainable(record.model_ref)
            sources, prepared = _as_the_network_saw_them(sources, init)
            patch = min(128, *(min(s.labels.shape[-2:]) for s in sources))
            config = TrainConfig(
                task=model_task(init),
                epochs=self.epochs.value,
                steps_per_epoch=RETRAIN_STEPS,
                learning_rate=float(self.learning_rate.value),
                patch_size=patch,
                train_layers=RETRAIN_LAYERS,
                augment=retrain_augment(init),
            )
        except UserInputError as err:
            report_error(self.status, str(err), "Retrain")
            return None

        outer = self

        class _GracefulWorker(GeneratorWorker):
            def quit(self) -> None:  # the activity dock's cancel keeps the best model
                outer.stop()

        self._stop, self._epochs, self.scores = threading.Event(), config.epochs, None
        self._first_batch = None
        base = record.model_name
        self._retraining = ((record.model_source, _model_file(record)), base)
        worker = create_worker(
            training_job, sources, config, self._stop, init=init, compare_with=init,
            invert="no" if prepared else "auto",
            _progress={"desc": f"Retraining {base}"}, _worker_class=_GracefulWorker,
            _start_thread=False,
            _connect={
                name: partial(self._in_order, handler)
                for name, handler in (
                    ("yielded", self._on_event),
                    ("returned", lambda result: self._on_returned(result, base, sources)),
                    ("errored", lambda err: report_failure(self.status, err, "Retrain")),
                    ("finished", self._on_finished),
                )
            },
        )  # fmt: skip
        self.worker, self.model = worker, None
        self.retrain_button.enabled, self.stop_button.enabled = False, True
        note = (
            " (one image: a strip of it held back to judge the result)" if len(sources) == 1 else ""
        )
        self.status.value = f"fine-tuning {base} on {len(sources)} corrected image(s){note} ..."
        worker.start()
        return worker

    def stop(self, *_: Any) -> None:
        """Stop after the current batch, keeping the best model so far."""
        if self.worker is not None:
            self._stop.set()
            self.stop_button.enabled = False
            self.status.value = "stopping after this batch ..."

    def undo(self, *_: Any) -> None:
        """Every Segment dock uses the model from before the last retraining again (the
        retrained model stays offered)."""
        if not self._parent_name:
            return
        registry.use_model(*self._parent)
        self.undo_button.enabled = False
        show_message(
            self.status,
            f"Undo retrain: using {self._parent_name!r} again; {self.model_name!r} is still "
            "offered in Model",
        )

    def _sources(self) -> tuple[_results.ResultRecord, list[PairSource]]:
        """The record of the chosen result and a training pair per corrected result."""
        from ...common.errors import UserInputError

        layer = self.result.value
        record = _results.result_record(layer) if layer is not None else None
        if record is None:
            raise UserInputError("segment an image first, then paint corrections into the result")
        if not _results.was_edited(layer):
            edited = self._edited_result_of(record)
            if edited is None:
                raise UserInputError(
                    f"paint corrections into {layer.name!r} first (paint, fill or erase objects)"
                )
            self._choose(edited)  # the result the user edited, of the same model
            layer, record = edited, _results.result_record(edited)
        sources = []
        for result in _results.corrected_results(self._viewer):
            other = _results.result_record(result)
            if other is None or not _same_model(other.model_ref, record.model_ref):
                continue
            if other.image_name not in self._viewer.layers:
                raise UserInputError(
                    f"the image {other.image_name!r} of {result.name!r} is no longer open"
                )
            image = self._viewer.layers[other.image_name]
            data = np.asarray(layer_array(image))
            labels = np.array(result.data, copy=True)
            changed = _results.corrected_mask(result)
            region = None if changed is None else correction_region(labels, changed)
            sources.append(
                PairSource(
                    other.image_name,
                    result.name,
                    data,
                    labels,
                    region,
                    bool(getattr(image, "rgb", False)),
                    (result.metadata.get("napari_unet") or {}).get("choice"),
                )
            )
        return record, sources

    def _edited_result_of(self, record: _results.ResultRecord) -> Any:
        """The topmost result the user edited that the model of ``record`` produced."""
        edited = [
            result
            for result in _results.corrected_results(self._viewer)
            if _same_model(_results.result_record(result).model_ref, record.model_ref)
        ]
        return edited[-1] if edited else None

    def _on_event(self, event: Any) -> None:
        from ...training.events import BatchEnd, EpochEnd

        if isinstance(event, Comparing):
            plural = "s" if event.n_images != 1 else ""
            self.status.value = (
                f"comparing the new model with {self._retraining[1]!r} on {event.n_images} "
                f"held-back corrected image{plural} ..."
            )
        elif isinstance(event, HeldBackScores):
            self.scores = event
        elif isinstance(event, BatchEnd):
            if self._first_batch is None:
                self._first_batch = time.monotonic()
            left = time_left(event, self._epochs, self._first_batch)
            self.status.value = f"fine-tuning: {left}"
            pbar = getattr(self.worker, "pbar", None)
            if pbar is not None and event.step == event.steps - 1:
                pbar.total = self._epochs
                pbar.n = event.epoch
                pbar.update(1)
        elif isinstance(event, EpochEnd):
            self.status.value = (
                f"fine-tuning: epoch {event.epoch + 1}/{event.epochs}, validation Dice "
                f"{event.val_dice:.3f}"
            )

    def _on_returned(self, result: Any, base: str, sources: list[PairSource]) -> None:
        if result.best_epoch < 0:
            self.status.value = "stopped before the first epoch ended: no model kept"
            return
        name = registry.unique_name(f"{base} corrected")
        result.model.card = {
            **result.model.card,
            "name": name,
            "description": f"{base} fine-tuned in napari on corrected "
            + ", ".join(s.labels_name for s in sources),
        }
        self.model, self.model_name = result.model, name
        self._parent, self._parent_name = self._retraining
        scores = self.scores or HeldBackScores(None, None, 0, "nothing was held back")
        # offered in every Segment dock; used there only if it beat its parent
        registry.register_model(name, result.model, select=scores.beats)
        self.undo_button.enabled = True
        same = ", on a held-back strip" if len(sources) == 1 else ""
        verdict = scores.describe(name, base)
        then = "; press Segment to see its result" if scores.beats else ""
        show_message(
            self.status,
            f"Retrain done (validation Dice {result.best_dice:.3f}{same}): {verdict}{then}",
        )

    def _on_finished(self) -> None:
        self.worker = None
        self.retrain_button.enabled, self.stop_button.enabled = True, False


def _as_the_network_saw_them(
    sources: list[PairSource], model: Any
) -> tuple[list[PairSource], bool]:
    """Each 2D result's image as Segment's network saw it (its channel, optical density,
    inversion: the layer metadata's ``choice``), so the fine-tune learns from what the model
    is given; and whether they were all prepared so. 3D and time series stay as they are."""
    import dataclasses

    from ...inference.pipeline import model_input
    from ...zoo.resolve import resolve_model

    if model is not None and any(s.choice is not None for s in sources):
        model = resolve_model(model)  # a built-in name or a file: read once, not per image
    out, prepared = [], True
    for source in sources:
        choice = source.choice
        if choice is None or np.ndim(source.labels) != 2 or model is None:
            out.append(source)
            prepared = False
            continue
        image, _, _ = model_input(
            source.image,
            model,
            axes=choice.get("axes"),
            channel=choice.get("channel"),
            invert="yes" if choice.get("inverted") else "no",
        )
        out.append(dataclasses.replace(source, image=image, rgb=False))
    return out, prepared


def time_left(event: Any, epochs: int, first: float | None, now: float | None = None) -> str:
    """``"batch 7/20, about 30 s left"``: the batches done of the run's ``epochs`` and the
    time the rest takes at the pace since the first batch ended (``first``,
    :func:`time.monotonic`; the first batch also holds the start-up, so it is not counted).
    Until a second batch has ended there is no pace: ``"batch 1/20"``."""
    done = event.epoch * event.steps + event.step + 1
    total = max(epochs * event.steps, done)
    if first is None or done < 2:
        return f"batch {done}/{total}"
    pace = ((time.monotonic() if now is None else now) - first) / (done - 1)
    return f"batch {done}/{total}, about {pace * (total - done):.0f} s left"


def _model_file(record: _results.ResultRecord) -> str:
    """The model file of a result made with a model file ("" for other models)."""
    return str(record.model_ref) if record.model_source == registry.FROM_FILE else ""


def _same_model(a: Any, b: Any) -> bool:
    return a is b if not isinstance(a, str) or not isinstance(b, str) else a == b


def _trainable(ref: Any) -> Any:
    """The model to fine-tune: a BioImage.IO package is loaded as napari-unet's U-Net.

    Raises :class:`~napari_unet.common.errors.UserInputError` (in plain words) for a package
    whose network is not napari-unet's U-Net. Other models are passed on as they are.
    """
    from ...zoo.package import is_package
    from ...zoo.resolve import trainable_model

    if hasattr(ref, "predict_iter") or (isinstance(ref, str) and is_package(ref)):
        return trainable_model(ref)
    return ref
