"""The U-Net Segment dock widget: an image layer in, a Labels layer out.

The widget only collects parameters and moves data: it turns the chosen layer into an array
and its axes (proposed from the layer and shown in the status line, editable under Advanced; a
layer whose axes cannot be told asks for them), the channel of a multichannel layer (the
Channel box) and the inversion setting, runs :func:`napari_unet.inference.pipeline.segment_iter`
in a thread worker (progress in napari's activity dock, counted for post-processing too; Cancel
stops the batch of tiles in flight at once, :mod:`napari_unet.inference.backends.interrupt`), and
puts the result into a Labels layer named ``"<image> labels"`` with the image's scale, translate
and axis labels. What the run decided (axes, channel, colour, inversion, model: the
:class:`~napari_unet.inference.images.domain.SegmentReport`) and the object count go to the
status line and to the layer's ``metadata["napari_unet"]``; an image unlike the model's training
images adds a warning (also a notification). An instance result of an in-memory image carries a
per-object table (area, centroid, mean intensity, confidence) in the layer's ``features``, listed
least confident first under *Where to correct first* (:mod:`._object_list`). Running again
updates that layer; *Outlines* shows it as outlines. The detection settings under Advanced
(thresholds, split, minimum size) start at the model card's values, read once torch is imported
(in a worker thread when the dock opens); a run passes on only those the user changed.
*Test-time augmentation* (Advanced) runs ``segment_iter(tta=True)``: the probabilities averaged
over flips and 90-degree rotations, several times slower; the status line and
``metadata["napari_unet"]["tta"]`` say whether a result was made with it. The status line
and napari's progress bar count each stage's steps up over all its passes
(:class:`~napari_unet._napari._stage_bar.StageCounts`). torch is imported when a run starts,
not before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    Container,
    PushButton,
)

from .. import _model_registry as registry
from .._dock import Advanced, Dock, header, wrapping_label
from .._feedback import report_error, report_failure
from .._layers import AxesProposal, axes_proposal, channel_count, channel_names, layer_array
from .._model_registry import BUILTIN, FROM_FILE, TRAINED, chosen_model
from .._stage_bar import StageBar, StageCounts
from ._object_list import ObjectList
from ._retrain import RetrainBox
from ._segment_output import (
    ask_replace,
    describe,
    drive,
    in_dock_words,
    model_record,
    put_result,
)
from ._segment_settings import (
    AUTO_CHANNEL,
    OUTLINE_WIDTH,
    POST_KEYS,
    add_advanced_settings,
    add_first_settings,
    card_postprocessing,
    changed_postprocessing,
    model_card,
)

if TYPE_CHECKING:
    import napari
    from superqt.utils import GeneratorWorker


class SegmentWidget(Dock):
    """U-Net Segment: pick an image layer and a model, press Segment.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are offered and where the result goes.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = viewer
        #: asked before labels the user edited are replaced (a dialog; replace it in tests)
        self.confirm_replace: Callable[[str], bool] = ask_replace
        self._worker: GeneratorWorker | None = None
        self._gen = None
        self._pbar = None
        #: the Labels layer of the last finished run
        self.result_layer: Any = None
        self._scale = 1.0  # the resampling factor of the current run, from its progress
        self._diameter: float | None = None  # the object diameter it measured (or was given)
        self._report: Any = None  # the SegmentReport of the current run, from its last event
        self._table: Any = None  # its per-object table, from its last event
        self._proposal = AxesProposal("")  # the axes proposed for the selected layer
        self._counts = StageCounts()  # each stage's steps over all its passes, this run
        #: the chosen model's card post-processing (None: not read yet), see _read_card_settings
        self._card_post: dict[str, float] | None = None
        self._cancelled = False
        self._stop = threading.Event()
        self._build()
        self._connect()
        self._on_image_changed()
        self._card_settings_follow()
        choice = registry.current_choice()
        if choice is not None and choice[0].startswith(TRAINED):
            self.use_model(*choice)  # a dock opened later uses the trained model in use

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        add_first_settings(self)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = wrapping_label()
        #: the result's objects, least confident first (shown once a result has a table)
        self.objects = ObjectList(self._viewer)
        self.retrain = RetrainBox(self._viewer)
        self.advanced = Advanced()
        self._build_advanced()
        self.extend(
            [
                Container(
                    widgets=[
                        self.image,
                        self.channel,
                        self.model_source,
                        self.model_file,
                        self.auto_size,
                        self.diameter,
                        self.z_mode,
                        self.anisotropy,
                        self.outlines,
                    ]
                ),
                Container(
                    layout="horizontal", labels=False, widgets=[self.run_button, self.cancel_button]
                ),
                self.status,
                self.objects,
                header("Correct and retrain"),
                self.retrain,
                self.advanced,
            ]
        )
        self.finish_layout()
        self.auto_size.changed.connect(
            lambda checked: setattr(self.diameter, "enabled", not checked)
        )

    def _build_advanced(self) -> None:
        """The collapsed *Advanced* rows; add a setting with ``self.advanced.add(widget)``."""
        add_advanced_settings(self)

    def _connect(self) -> None:
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._refresh_images)
        self.image.changed.connect(self._on_image_changed)
        self.axes.changed.connect(self._on_axes_changed)
        self.model_source.changed.connect(self._on_source_changed)
        self.export_button.changed.connect(lambda: self.export_model())
        self.model_file.changed.connect(self._note_choice)
        self.model_file.changed.connect(self._card_settings_follow)
        self.outlines.changed.connect(self._show_outlines)
        registry.models_changed.connect(self._on_models_changed)
        registry.model_used.connect(self.use_model)
        # stop listening when napari deletes the dock (the registry outlives it)
        for signal, slot in (
            (registry.models_changed, self._on_models_changed),
            (registry.model_used, self.use_model),
        ):
            self.native.destroyed.connect(partial(signal.disconnect, slot, missing_ok=True))
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        import napari

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, napari.layers.Image)
        ]

    def _refresh_images(self, _event: Any = None) -> None:
        self.image.reset_choices()
        if self.image.value is None and self.image.choices:
            self.image.value = self.image.choices[0]

    def _on_image_changed(self, _value: Any = None) -> None:
        """A new layer: propose its axes (or ask for them) and fill the Channel box."""
        layer = self.image.value
        self._proposal = (
            axes_proposal(layer, self._viewer) if layer is not None else AxesProposal("")
        )
        with self.axes.changed.blocked():
            self.axes.value = self._proposal.axes
        self._on_axes_changed()
        if layer is not None and self._proposal.axes:
            self.anisotropy.value = layer_anisotropy(layer, self._proposal.axes)
        if self._proposal.problem:
            self.advanced.set_expanded(True)  # the Axes box must be filled in

    def _on_axes_changed(self, _value: Any = None) -> None:
        """Proposed or typed axes: Z-stack settings, the Channel box and the status follow."""
        layer = self.image.value
        axes = self._valid_axes(layer)
        had_z = not self.anisotropy.native.isHidden()
        self._show_z_settings()
        self._show_channels(layer, axes)
        if layer is not None and axes and not had_z:  # Z typed in: its step from the layer
            self.anisotropy.value = layer_anisotropy(layer, axes)
        if not self.running:
            self.status.value = self._input_line(layer, axes)

    def _valid_axes(self, layer: Any) -> str:
        """The Axes box as axes of ``layer``'s data, ``""`` when empty or not fitting."""
        from ...inference.images.axes import parse_axes

        text = (self.axes.value or "").strip()
        if layer is None or not text:
            return ""
        try:
            return parse_axes(text, layer_array(layer).ndim)
        except ValueError:
            return ""

    def _axes_source(self, axes: str) -> str | None:
        """``segment_iter``'s ``axes_source``: None (typed: "given") unless as proposed."""
        return self._proposal.source if axes and axes == self._proposal.axes else None

    def _show_channels(self, layer: Any, axes: str) -> None:
        """The Channel box lists the channels of a multichannel (not colour) layer, else hides."""
        n = channel_count(tuple(layer_array(layer).shape), axes) if axes else 0
        names = channel_names(layer, n) if n > 1 else None
        entries = [(f"{i}: {names[i]}" if names else str(i), i) for i in range(n if n > 1 else 0)]
        previous = self.channel.value
        self.channel.choices = [(AUTO_CHANNEL, None), *entries]
        self.channel.value = previous if previous in self.channel.choices else None
        self.channel.visible = n > 1

    def _input_line(self, layer: Any, axes: str) -> str:
        """The status before a run: the axes used for ``layer`` and where they come from."""
        from ...inference.images.axes import is_colour, parse_axes

        if layer is None:
            return ""
        shape = tuple(layer_array(layer).shape)
        text = (self.axes.value or "").strip()
        if not text:
            problem = self._proposal.problem or "type one letter per axis in Axes (Advanced)"
            return f"axes needed for {layer.name!r}: {problem}"
        if not axes:
            try:
                parse_axes(text, len(shape))
                why = ""
            except ValueError as err:
                why = f"{err}; "
            return f"axes do not fit {layer.name!r} (shape {shape}): {why}see Axes (Advanced)"
        origin = {"layer": "from the layer", "guessed": "guessed from the shape"}.get(
            self._axes_source(axes) or "", "as typed"
        )
        line = f"{layer.name!r}: axes {axes} ({origin}; change them under Advanced)"
        n = channel_count(shape, axes)
        if is_colour(axes, shape):
            line += ", colour"
        elif n > 1:
            line += f", {n} channels: choose the one to segment in Channel"
        return line

    def _show_z_settings(self, _value: Any = None) -> None:
        """The Z stack settings show for images with a Z axis."""
        has_z = "Z" in (self.axes.value or "").upper()
        self.z_mode.visible = self.anisotropy.visible = has_z

    def _model_choices(self, _widget: Any = None) -> list[str]:
        return [BUILTIN, *(TRAINED + n for n in registry.registered_models()), FROM_FILE]

    def _on_models_changed(self, _name: str) -> None:
        """A model was trained (or forgotten): offer the session's models, keep the choice."""
        self.model_source.reset_choices()

    def use_model(self, source: str, model_file: str = "") -> None:
        """Use the model choice ``source`` (for a file, ``model_file``): every dock is told
        (``_model_registry.use_model``) when a trained model beat the one in use, or on Undo
        retrain."""
        self.model_source.reset_choices()
        if model_file:
            self.model_file.value = model_file
        if source in self.model_source.choices:
            self.model_source.value = source

    def _on_source_changed(self, value: str) -> None:
        self.model_file.visible = value == FROM_FILE
        self.model_source.tooltip = f"the model that segments: {value}"  # a long name is cut
        self._note_choice()
        self._card_settings_follow()

    def _card_settings_follow(self, _value: Any = None) -> None:
        """Fill the detection settings from the chosen model's card, once torch is imported."""
        import sys

        self._card_post = None
        if "torch" in sys.modules:
            self._read_card_settings()
        else:  # reading a model file imports torch: off the GUI thread
            from ..train._network_summary import import_torch_then

            import_torch_then(self._read_card_settings)

    def _read_card_settings(self) -> None:
        """The detection rows show the post-processing of the chosen model's card."""
        try:
            post = card_postprocessing(model_card(self.model_source.value, self.model_file.value))
            for key, widget in self._post_widgets().items():
                widget.value = post[key]
        except RuntimeError:  # the dock was closed before torch was imported
            return
        self._card_post = post

    def _post_widgets(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in POST_KEYS}

    def _postprocessing(self) -> dict[str, float]:
        """The detection settings the user changed from the model card's (what a run passes)."""
        if self._card_post is None:  # torch is being imported: read the card now
            self._read_card_settings()
        values = {key: widget.value for key, widget in self._post_widgets().items()}
        return changed_postprocessing(values, self._card_post or {})

    def _show_outlines(self, _value: Any = None) -> None:
        """Outlines ticked or not: the result layer follows at once."""
        layer = self.result_layer
        if layer is not None and any(ly is layer for ly in self._viewer.layers):
            layer.contour = OUTLINE_WIDTH if self.outlines.value else 0

    def _note_choice(self, _value: Any = None) -> None:
        """The model in use, for training runs to compare with (``_model_registry``)."""
        source = self.model_source.value
        registry.note_choice(source, str(self.model_file.value) if source == FROM_FILE else "")

    # -- running ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a segmentation is in progress."""
        return self._worker is not None

    def run(self) -> GeneratorWorker | None:
        """Start segmenting the chosen image layer in a thread worker; returns the worker.

        Returns ``None`` (after a notification) when the inputs are incomplete.
        """
        from napari.qt.threading import create_worker

        from ...common.errors import UserInputError
        from ...inference.pipeline import segment_iter

        if self.running:
            return self._worker
        layer = self.image.value
        try:
            job = self._job(layer)
        except UserInputError as err:
            self._notify_error(err)
            return None
        record = model_record(layer.name, self.model_source.value, job["model"])
        self._stop = threading.Event()  # set by Cancel: stops the batch in flight
        self._gen = segment_iter(
            job.pop("image"),
            job.pop("model"),
            return_probabilities=self.probabilities.value,
            stop=self._stop,
            table=True,
            **job,
        )
        worker = create_worker(
            drive,
            self._gen,
            _start_thread=False,
            _connect={
                "yielded": self._on_progress,
                "returned": lambda result: self._on_result(
                    layer, job["axes"], result, record, tta=job["tta"]
                ),
                "errored": self._on_error,  # napari also shows it as a notification
                "finished": self._on_finished,
            },
        )
        self._worker, self._cancelled, self._scale, self._diameter = worker, False, 1.0, None
        self._report = self._table = None
        self._counts = StageCounts()
        self._pbar = StageBar(f"U-Net Segment {layer.name}", "U-Net Segment")
        self._set_running(True)
        self.status.value = "loading the model..."
        worker.start()
        return worker

    def export_model(self, path: Any = None) -> Any:
        """Export the chosen model as a BioImage.IO package, in a thread; returns the worker."""
        from ...common.errors import UserInputError
        from ...zoo.package import is_package
        from .._zoo_export import start_export

        def report(message: str, error: bool) -> None:
            if error:
                report_error(self.status, message)
            else:
                self.status.value = message

        try:
            model = chosen_model(self.model_source.value, self.model_file.value)
        except UserInputError as err:
            report(str(err), True)
            return None
        if model is not None and is_package(model):
            report(f"{model} is already a BioImage.IO package", True)
            return None
        target = path if path is not None else self.export_path.value
        return start_export("nuclei" if model is None else model, target, report)

    def cancel(self) -> None:
        """Stop the running segmentation (the batch of tiles in flight is dropped at once)."""
        if self._worker is not None:
            self._cancelled = True
            self.status.value = "cancelling..."
            self._worker.quit()  # first: the worker must not resume the generator
            self._stop.set()

    def _job(self, layer: Any) -> dict[str, Any]:
        from ...common.errors import UserInputError
        from ...inference.clusters.cluster import scheduler_address
        from ...inference.images.axes import parse_axes
        from ...inference.volumes.blockwise.plan import block_from_text

        if layer is None:
            raise UserInputError("choose an image layer to segment")
        model = chosen_model(self.model_source.value, self.model_file.value)
        data = layer_array(layer)
        axes = self._valid_axes(layer)
        if not axes:
            self.advanced.set_expanded(True)  # show the Axes box
            text = (self.axes.value or "").strip()
            if not text:
                raise UserInputError(
                    self._proposal.problem
                    or f"type the axes of {layer.name!r} in Axes (Advanced), one letter per axis"
                )
            parse_axes(text, data.ndim)  # raises, saying why they do not fit
        n = channel_count(tuple(data.shape), axes)
        return {
            **_post_arguments(self._postprocessing()),
            "image": data,
            "model": model,
            "axes": axes,
            "axes_source": self._axes_source(axes),
            "channel": self.channel.value if n > 1 else None,
            "channel_names": channel_names(layer, n) if n > 1 else None,
            "invert": self.invert.value,
            "output": self.output.value,
            "tta": bool(self.tta.value),
            "tile_shape": self.tile.value or None,
            "overlap": self.overlap.value or None,
            "device": self.device.value,
            "engine": self.engine.value,
            "diameter": "auto" if self.auto_size.value else (self.diameter.value or None),
            "client": scheduler_address(self.scheduler.value),
            "z_mode": self.z_mode.value,
            "anisotropy": self.anisotropy.value,
            "stitch_threshold": self.stitch_threshold.value,
            "block": block_from_text(self.block.value),
        }

    # -- results (GUI thread) --------------------------------------------------------------
    def _on_progress(self, event: Any) -> None:
        # napari's progress bar pumps the event loop in update(), so _on_finished may run in
        # the middle of this handler: write the status first and ignore a cancelled run.
        if event.stage == "done":  # the last event: what the run decided and found
            self._report, self._table = event.report, event.table
            return
        pbar = self._pbar
        if pbar is None or self._cancelled:
            return
        frames = f", frame {event.frame + 1}/{event.n_frames}" if event.n_frames > 1 else ""
        self._scale, self._diameter = event.scale, event.diameter
        post = event.stage == "postprocess"
        stage = "post-processing" if post else event.stage
        # the engine counts each pass of a stage from 0 (the object size looks several times)
        done, total = self._counts.count(stage, event.done, event.total)
        self.status.value = (
            f"post-processing: labels from the probabilities, step {done}/{total}{frames} ..."
            if post
            else f"{stage}: {done}/{total}{frames}{self._scale_note()}"
        )
        pbar.show(stage, done, total)

    def _on_result(
        self, layer: Any, axes: str, result: Any, record: Any = None, *, tta: bool = False
    ) -> None:
        from ...inference.images.axes import labels_axes

        if self._cancelled:
            return
        labels, probs = result if isinstance(result, tuple) else (result, None)
        record = record or model_record(layer.name, self.model_source.value, None)
        report = self._report
        if report is not None and record.model_ref == "nuclei":
            record = _routed_model(record, report)
        out = put_result(self._viewer, layer, axes, labels, probs, record, self.confirm_replace)
        self.result_layer = out
        if self.outlines.value:
            out.contour = OUTLINE_WIDTH
        # what the run decided and found; the object size it measured (None: not measured)
        meta = report.as_metadata() if report is not None else {}
        meta.update(object_diameter=self._diameter, scale=self._scale, tta=tta)
        out.metadata["napari_unet"] = meta
        self.objects.show_table(out, self._table, labels_axes(axes))
        self.retrain.select(out)
        per_time = "; each time point has its own ids (no tracking)" if "T" in axes else ""
        found = describe(labels)
        if report is not None and report.objects is not None:
            plural = "" if report.objects == 1 else "s"
            found = f"{report.objects} object{plural} in {tuple(labels.shape)}"
        augmented = "; test-time augmentation (flips and rotations averaged)" if tta else ""
        lines = [f"done: {found}{self._scale_note()}{augmented}{per_time}"]
        if report is not None:
            lines.append(f"input: {report.choice.describe()}")
            if report.warning:
                warning = in_dock_words(report.warning)
                lines.append(f"warning: {warning}")
                from napari.utils.notifications import show_warning

                show_warning(f"U-Net Segment {layer.name!r}: {warning}")
        self.status.value = "\n".join(lines)

    def _scale_note(self) -> str:
        """Object size and resampling for the status line ("" when neither is known)."""
        size = "" if self._diameter is None else f"objects ~{self._diameter:.0f} px, "
        if self._scale == 1.0:
            return f" ({size}not resampled)" if size else ""
        return f" ({size}image resampled x{self._scale:.2f} for the model)"

    def _on_finished(self) -> None:
        if self._cancelled and self._gen is not None:
            self._gen.close()  # removes temporary stores of a cancelled run
            self.status.value = "cancelled"
        self._worker, self._gen = None, None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running

    def _on_error(self, err: BaseException) -> None:
        from ...common.errors import Cancelled

        if self._cancelled and isinstance(err, Cancelled):
            return  # what Cancel asked for (a Z stack's batch stopped part-way)
        report_failure(self.status, err, "U-Net Segment", in_dock_words)

    def _notify_error(self, err: BaseException) -> None:
        report_error(self.status, str(err), "U-Net Segment")


def _post_arguments(changed: dict[str, float]) -> dict[str, Any]:
    """``segment_iter``'s keywords for the detection settings the user changed.

    ``min_size=`` for the minimum size; ``postprocessing=`` (a dict) for the thresholds and
    split, which ``segment_iter`` must accept.
    """
    import inspect

    from ...common.errors import UserInputError
    from ...inference.pipeline import segment_iter

    changed = dict(changed)
    arguments: dict[str, Any] = {}
    if "min_size" in changed:
        arguments["min_size"] = int(changed.pop("min_size"))
    if changed:
        if "postprocessing" not in inspect.signature(segment_iter).parameters:
            raise UserInputError(
                "this version of napari-unet segments with the model card's thresholds and "
                f"split only: set {', '.join(changed)} back under Advanced"
            )
        arguments["postprocessing"] = changed
    return arguments


def _routed_model(record: Any, report: Any) -> Any:
    """The record of a built-in run that the engine sent to the H&E model instead."""
    from dataclasses import replace

    from ...inference.pipeline import STAINED_MODEL

    if report.choice.model_reason == "given":  # the built-in nuclei model it was asked for
        return record
    return replace(record, model_ref=STAINED_MODEL, model_name=STAINED_MODEL)


def layer_anisotropy(layer: Any, axes: str) -> float:
    """Z step / X pixel size from the layer's scale (1 without a Z axis or a scale)."""
    letters = (axes or "").upper()
    if getattr(layer, "rgb", False):
        letters = letters.replace("C", "")
    scale = list(getattr(layer, "scale", ()))
    if "Z" not in letters or "X" not in letters or len(scale) != len(letters):
        return 1.0
    z, x = float(scale[letters.index("Z")]), float(scale[letters.index("X")])
    return round(z / x, 4) if z > 0 and x > 0 else 1.0
