"""The U-Net Evaluate dock widget: a prediction and a ground-truth Labels layer in, scores out.

The widget collects the parameters, hands the layers' arrays to
:func:`napari_unet.evaluation.pairs.iter_evaluate_pair` in a thread worker (progress per slice
in napari's activity dock, Cancel stops between slices), then on the GUI thread fills a table,
and adds (or updates) an error layer named ``"<prediction> errors"`` with the ground truth's
scale, translate and axis labels. :meth:`EvaluateWidget.run` is what the button calls;
scripts and tests call it too, and :meth:`EvaluateWidget.export_csv` writes the full table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    PushButton,
    Table,
)

from .._dock import Advanced, Dock, wrapping_label
from .._feedback import report_error, report_failure
from .._layers import Placement, same_layer, upsert_layer
from ._evaluate_job import evaluate_job, layer_array
from ._metrics_table import (
    ERROR_COLORS,
    legend_html,
    metric_keys,
    metric_tooltip,
    parse_thresholds,
    semantic_warning,
    summary_text,
    table_value,
)

#: more classes than this in a semantic evaluation: probably instance labels (a warning)
MAX_SEMANTIC_CLASSES = 20
NO_REGION = "none"
WHOLE = "none (whole volume)"

if TYPE_CHECKING:
    import napari
    from superqt.utils import GeneratorWorker


class EvaluateWidget(Dock):
    """U-Net Evaluate: score a prediction Labels layer against a ground-truth Labels layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose Labels layers are offered and where the error layer goes.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = viewer
        self._worker: GeneratorWorker | None = None
        self._cancelled = False
        self.records: list[dict[str, Any]] = []
        self._build()
        self._connect()
        self._refresh()

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        self.prediction = ComboBox(label="Prediction", choices=self._labels_choices, nullable=True)
        self.ground_truth = ComboBox(
            label="Ground truth", choices=self._labels_choices, nullable=True
        )
        self.run_button = PushButton(text="Evaluate")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = wrapping_label()
        self.table = Table(value=[])
        self.table.min_height = 240  # ~8 metric rows visible; the table scrolls for the rest
        self.legend = wrapping_label(f"Error layer:<br>{legend_html()}")  # wraps, never cut
        self.csv_file = FileEdit(label="CSV file", mode="w", filter="*.csv")
        self.export_button = PushButton(text="Export CSV", enabled=False)
        self.advanced = Advanced()
        self._build_advanced()
        self.extend([
            Container(widgets=[self.prediction, self.ground_truth]),
            Container(
                layout="horizontal", labels=False, widgets=[self.run_button, self.cancel_button]
            ),
            self.status, self.table, self.legend,
            Container(layout="horizontal", widgets=[self.csv_file, self.export_button]),
            self.advanced,
        ])  # fmt: skip
        self.finish_layout()

    def _build_advanced(self) -> None:
        """The collapsed *Advanced* rows; add a setting with ``self.advanced.add(widget)``."""
        self.region = ComboBox(
            label="Region (optional)", choices=self._region_choices,
            tooltip="evaluate only where this layer is nonzero; objects mostly outside are left out",
        )  # fmt: skip
        self.task = ComboBox(
            label="Labels are", choices=("instance", "semantic"), value="instance",
            tooltip="instance: one id per object; semantic: one id per class",
        )  # fmt: skip
        self.iou_threshold = FloatSpinBox(
            label="Match at IoU >", value=0.5, min=0.0, max=0.99, step=0.05,
            tooltip="threshold of TP/FP/FN, precision, recall, F1, PQ and the error layer",
        )  # fmt: skip
        self.ap_thresholds = LineEdit(
            label="AP thresholds", value="0.5:0.95:0.05",
            tooltip="start:stop:step or a list; AP = TP/(TP+FP+FN) at each, and their mean",
        )  # fmt: skip
        self.axis = ComboBox(label="Per slice along", choices=self._axis_choices)
        self.advanced.add(self.region, self.task, self.iou_threshold, self.ap_thresholds, self.axis)

    def _connect(self) -> None:
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._refresh)
        self.ground_truth.changed.connect(self._on_gt_changed)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self._export_clicked)

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        import napari

        return [(ly.name, ly) for ly in self._viewer.layers if isinstance(ly, napari.layers.Labels)]

    def _region_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        import napari

        kinds = (napari.layers.Labels, napari.layers.Image)
        layers = [
            (ly.name, ly)
            for ly in self._viewer.layers
            if isinstance(ly, kinds) and not getattr(ly, "rgb", False)
        ]
        return [(NO_REGION, None), *layers]

    def _axis_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        gt = getattr(self, "ground_truth", None)
        layer = gt.value if gt is not None else None
        ndim = layer.ndim if layer is not None else 2
        axes = [(f"axis {i} ({layer.axis_labels[i]})", i) for i in range(ndim - 2)] if layer else []
        return [(WHOLE, None), *axes]

    def _refresh(self, _event: Any = None) -> None:
        self.reset_choices()
        labels = [ly for _, ly in self._labels_choices()]
        if len(labels) >= 2 and same_layer(self.prediction.value, self.ground_truth.value):
            self.ground_truth.value = labels[0]
            self.prediction.value = labels[-1]
        self._on_gt_changed()

    def _on_gt_changed(self, _value: Any = None) -> None:
        self.axis.reset_choices()
        layer = self.ground_truth.value
        if layer is not None and layer.ndim >= 3 and self.axis.value is None:
            # Z stacks: 3D objects matched in the whole volume (per slice is an option);
            # time series (a first axis named t, or 4+ axes): one evaluation per time point
            if layer.ndim >= 4 or str(layer.axis_labels[0]).strip().lower() == "t":
                self.axis.value = 0

    # -- running ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether an evaluation is in progress."""
        return self._worker is not None

    @property
    def error_layer(self) -> napari.layers.Labels | None:
        """The error layer of the current prediction, if it exists."""
        pred = self.prediction.value
        name = f"{pred.name} errors" if pred is not None else None
        return self._viewer.layers[name] if name in self._viewer.layers else None

    def run(self) -> GeneratorWorker | None:
        """Evaluate the chosen layers in a thread worker and return the worker.

        Returns ``None`` (after a notification) when the inputs are incomplete or do not fit.
        The table and the error layer are updated on the GUI thread when the worker returns.
        """
        from napari.qt.threading import create_worker

        from ...common.errors import UserInputError

        if self.running:
            return self._worker
        try:
            job = self._job()
        except UserInputError as err:
            self._notify_error(err)
            return None
        pred_layer, gt_layer = self.prediction.value, self.ground_truth.value
        n = gt_layer.data.shape[job["axis"]] if job["axis"] is not None else 1
        worker = create_worker(
            evaluate_job,
            job,
            _start_thread=False,
            _progress={"total": n, "desc": "U-Net Evaluate"},
            _connect={
                "yielded": self._on_progress,
                "returned": lambda result: self._on_result(pred_layer, gt_layer, result),
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )
        self._worker, self._cancelled = worker, False
        self._set_running(True)
        self.status.value = f"evaluating {pred_layer.name} against {gt_layer.name}..."
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running evaluation after the current slice."""
        if self._worker is not None:
            self._cancelled = True
            self.status.value = "cancelling..."
            self._worker.quit()

    def _job(self) -> dict[str, Any]:
        from ...common.errors import ShapeError, UserInputError

        pred, gt, region = self.prediction.value, self.ground_truth.value, self.region.value
        if pred is None or gt is None:
            raise UserInputError("choose a prediction and a ground-truth Labels layer")
        arrays = {"prediction": layer_array(pred), "ground_truth": layer_array(gt)}
        if arrays["prediction"].shape != arrays["ground_truth"].shape:
            raise ShapeError(
                f"prediction {pred.name!r} has shape {arrays['prediction'].shape} but ground truth "
                f"{gt.name!r} has shape {arrays['ground_truth'].shape}; choose layers of the same shape"
            )
        if region is not None and layer_array(region).shape != arrays["ground_truth"].shape:
            raise ShapeError(
                f"region {region.name!r} has shape {layer_array(region).shape}, not the ground truth's "
                f"{arrays['ground_truth'].shape}"
            )
        thresholds = parse_thresholds(self.ap_thresholds.value)
        if not thresholds:
            raise UserInputError("give at least one AP threshold")
        return {
            **arrays,
            "region": layer_array(region) if region is not None else None,
            "task": self.task.value,
            "thresholds": thresholds,
            "iou_threshold": round(float(self.iou_threshold.value), 6),
            "axis": self.axis.value,
            "image": pred.name,
        }

    # -- results (GUI thread) --------------------------------------------------------------
    def _on_progress(self, event: Any) -> None:
        self.status.value = f"evaluated {event.done}/{event.total} slice(s)"

    def _on_result(self, pred_layer: Any, gt_layer: Any, result: Any) -> None:
        if self._cancelled:
            return
        self.records = result.records
        self._show_table(self.records)
        self._show_errors(pred_layer, gt_layer, result.errors)
        self.status.value = f"done: {summary_text(self.records)}"
        self.export_button.enabled = True
        note = semantic_warning(self.records, MAX_SEMANTIC_CLASSES)
        if note:
            from napari.utils.notifications import show_warning

            self.status.value += f". Warning: {note}"
            show_warning(f"U-Net Evaluate: {note}")

    def _show_table(self, records: list[dict[str, Any]]) -> None:
        self.table.value = table_value(records)
        header = self.table.native.verticalHeaderItem
        for i, key in enumerate(metric_keys(records)):
            item = header(i)
            if item is not None:
                item.setToolTip(metric_tooltip(key))

    def _show_errors(self, pred_layer: Any, gt_layer: Any, errors: np.ndarray | None) -> None:
        if errors is not None:
            put_error_layer(self._viewer, f"{pred_layer.name} errors", errors, gt_layer)

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Write every record of the last evaluation at full precision to ``path`` (atomically)."""
        from ...common.errors import UserInputError
        from ...evaluation.folders import write_csv

        if not self.records:
            raise UserInputError("nothing to export yet: run the evaluation first")
        target = Path(path).expanduser()
        if str(path).strip() in ("", ".") or target.is_dir():
            raise UserInputError(
                "choose a CSV file to write to (…/scores.csv) in the CSV file field"
            )
        if target.suffix.lower() != ".csv":
            target = target.with_suffix(".csv")
        written = write_csv(self.records, target)
        self.status.value = f"wrote {written}"
        return written

    def _export_clicked(self, *_: Any) -> None:
        """The Export button: write the CSV, or say why not (never an uncaught error)."""
        from ...common.errors import UserInputError

        try:
            self.export_csv(self.csv_file.value)
        except (UserInputError, OSError) as err:
            report_error(self.status, f"could not export the CSV: {err}", "U-Net Evaluate")

    def _on_finished(self) -> None:
        if self._cancelled:
            self.status.value = "cancelled"
        self._worker = None
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running

    def _on_error(self, err: BaseException) -> None:
        report_failure(self.status, err, "U-Net Evaluate")

    def _notify_error(self, err: BaseException) -> None:
        report_error(self.status, str(err), "U-Net Evaluate")


def put_error_layer(viewer: napari.viewer.Viewer, name: str, errors: Any, like: Any) -> Any:
    """Add or update (in place) the error layer ``name``, placed as the layer ``like``.

    Its values are coloured by :data:`._metrics_table.ERROR_COLORS`; 0 is transparent.
    """
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, Any] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    colors.update({k: c for k, (_, c) in ERROR_COLORS.items()})
    colormap = DirectLabelColormap(color_dict=colors)
    placement = Placement(
        scale=tuple(like.scale), translate=tuple(like.translate),
        axis_labels=tuple(like.axis_labels), units=tuple(like.units),
    )  # fmt: skip
    layer = upsert_layer(viewer, "labels", name, errors, placement, colormap=colormap, opacity=0.8)
    layer.colormap = colormap
    return layer
