"""The settings rows of the U-Net Segment dock: the few up front, the rest under Advanced.

The detection settings under Advanced (seed and foreground thresholds, split, minimum size:
:func:`napari_unet.inference.labels.postprocess.instance_labels`) start at the values of the chosen
model's card (:func:`card_postprocessing`); a run passes on only the ones the user changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
)

from ...common.validate import POSTPROCESSING_KEYS
from ...inference.images.modality import INVERT_CHOICES
from .._dock import header
from .._model_registry import BUILTIN, FROM_FILE, TRAINED

OUTPUT_KINDS = ("instance", "semantic")
#: the Channel box's first entry: segment_iter's channel=None (a nuclear stain by name, or all
#: channels for a multichannel model; otherwise the run is refused with the list of channels)
AUTO_CHANNEL = "auto"
DEVICES = ("auto", "cpu", "cuda", "mps")
#: napari_unet.inference.volumes.zstack.Z_MODES, with plain words
Z_MODES = (
    ("3D objects (YX, ZX, ZY planes)", "3d"),
    ("slices linked by overlap", "stitch"),
    ("each slice on its own", "slices"),
)
#: napari_unet.inference.backends.engines.ENGINES (torch is imported when a run starts, not before)
ENGINES = ("auto", "torch", "openvino", "onnxruntime", "openvino-int8")
#: the instance post-processing settings of a model card (``postprocessing`` entry), in the
#: order of the Advanced rows
POST_KEYS = POSTPROCESSING_KEYS
#: the width (pixels) of the result's outlines when Outlines is ticked (napari's ``contour``)
OUTLINE_WIDTH = 2


def add_first_settings(widget: Any) -> None:
    """Image, channel, model, object size and Z-stack rows, as attributes of ``widget``.

    The Channel box shows for a multichannel (not colour) layer only; the widget fills it.
    """
    widget.image = ComboBox(label="Image", choices=widget._image_choices)
    widget.channel = ComboBox(
        label="Channel", choices=[(AUTO_CHANNEL, None)], value=None, visible=False,
        tooltip="the channel the model segments, of a multichannel image (0-based on its C "
        "axis). auto: a channel named for a nuclear stain (DAPI, Hoechst, ...) or, for a "
        "model that takes several channels, all of them; otherwise choose one",
    )  # fmt: skip
    widget.model_source = ComboBox(label="Model", choices=widget._model_choices, value=BUILTIN)
    widget.model_file = FileEdit(
        label="Model file", mode="r", visible=False,
        filter="*.safetensors *.zip rdf.yaml *.bioimageio.yaml",
        tooltip="a napari-unet model file, or a BioImage.IO package (.zip or its rdf.yaml)",
    )  # fmt: skip
    widget.auto_size = CheckBox(
        label="Auto object size", value=True,
        tooltip="measure the objects first and resample the image only if they are outside "
        "the sizes the model was trained on (10-40 px for the built-in nuclei model)",
    )  # fmt: skip
    widget.diameter = FloatSpinBox(
        label="Object diameter (px)", value=0, min=0, max=10000, step=1,
        enabled=False,
        tooltip="typical object diameter in pixels (0 = as trained); the image is resampled "
        "so objects have the size the model was trained on (about 20 px for the built-in "
        "nuclei model)",
    )  # fmt: skip
    widget.z_mode = ComboBox(
        label="Z stack", choices=Z_MODES, value="3d", visible=False,
        tooltip="how a 2D model makes 3D objects of a Z stack: predict the YX, ZX and ZY "
        "planes and build 3D objects (best; slower), link the objects of neighbouring "
        "slices by overlap, or keep each slice's objects (ids unique over the stack). "
        "Time points always keep their own ids",
    )  # fmt: skip
    widget.anisotropy = FloatSpinBox(
        label="Z step / pixel size", value=1.0, min=0.01, max=1000, step=0.1,
        visible=False,
        tooltip="the anisotropy of the stack: z step divided by the XY pixel size (0.6 um "
        "slices of 0.2 um pixels: 3); from the layer's scale",
    )  # fmt: skip
    widget.outlines = CheckBox(
        label="Outlines", value=False,
        tooltip=f"show the objects as outlines ({OUTLINE_WIDTH} px, napari's contour) instead "
        "of filled; applies to the result at once and to every run",
    )  # fmt: skip


def add_advanced_settings(widget: Any) -> None:
    """The collapsed *Advanced* rows of the Segment ``widget`` (``widget.advanced``)."""
    widget.axes = LineEdit(
        label="Axes",
        tooltip="one letter per axis of the layer's data, from T C Z Y X (e.g. CYX: channels, "
        "then the image; ZYX: a z-stack; YXC: RGB colour); proposed from the layer",
    )
    widget.invert = ComboBox(
        label="Invert", choices=INVERT_CHOICES, value="auto",
        tooltip="invert the image for the model (dark nuclei on a bright background, e.g. "
        "brightfield); auto: when the background is brighter than the objects",
    )  # fmt: skip
    widget.output = ComboBox(
        label="Output", choices=OUTPUT_KINDS, value="instance",
        tooltip="instance: one label per object; semantic: one label per class",
    )  # fmt: skip
    add_detection_settings(widget)
    widget.tile = SpinBox(
        label="Tile size (0 = auto)", value=0, min=0, max=4096, step=16,
        tooltip="the image is predicted in square tiles of this edge in pixels; "
        "0 = from the model and the image",
    )  # fmt: skip
    widget.overlap = SpinBox(
        label="Tile overlap (0 = auto)", value=0, min=0, max=1024,
        tooltip="overlap of neighbouring tiles in pixels; 0 = from the model's receptive field",
    )  # fmt: skip
    widget.device = ComboBox(
        label="Device", choices=DEVICES, value="auto",
        tooltip="auto: a GPU when there is one, else the CPU",
    )  # fmt: skip
    widget.engine = ComboBox(
        label="Engine", choices=ENGINES, value="auto",
        tooltip="what runs the network: auto = the fastest installed engine verified for "
        "the model (OpenVINO / ONNX Runtime from napari-unet[fast] on the CPU, for images "
        "of 1 MPix or more; else torch); a model's first run with an engine exports it once",
    )  # fmt: skip
    widget.tta = CheckBox(
        label="Test-time augmentation (slower, ~5x)", value=False,
        tooltip="average the network's probabilities over the flips and 90-degree rotations "
        "of each tile (8 passes a tile, as Cellpose's augment): somewhat better objects, "
        "several times the time; the object size is measured without it. Not on a Dask "
        "cluster",
    )  # fmt: skip
    widget.probabilities = CheckBox(
        label="Probabilities layer", value=False,
        tooltip="also add the network's class probabilities as an image layer",
    )  # fmt: skip
    widget.stitch_threshold = FloatSpinBox(
        label="Stitch IoU", value=0.2, min=0.01, max=1.0, step=0.05,
        tooltip="Z stack linked by overlap: objects of neighbouring slices with at least "
        "this intersection over union become one object",
    )  # fmt: skip
    widget.block = LineEdit(
        label="Block Z Y X",
        tooltip="Z stack in 3D objects: segment it block by block, objects joined across "
        "blocks, memory bounded by a block of this many voxels (e.g. 64 512 512); empty: "
        "whole for in-memory layers, from the chunks and the free memory for dask/zarr",
    )
    widget.scheduler = LineEdit(
        label="Dask scheduler",
        tooltip="compute on a dask.distributed cluster: its scheduler's address, e.g. "
        "tcp://host:8786 (empty: $DASK_SCHEDULER_ADDRESS, else this computer); the workers "
        "must reach the image and a shared temporary folder",
    )
    widget.export_path = FileEdit(
        label="Export model to", mode="w", filter="*.zip",
        tooltip="a BioImage.IO package (.zip) of the chosen model, tested with "
        "bioimageio.core before it is written (needs napari-unet[bioimageio])",
    )  # fmt: skip
    widget.export_button = PushButton(text="Export model to BioImage.IO")
    widget.advanced.add(
        widget.axes, widget.invert, widget.output,
        header("Detection (instance output)"), widget.seed_threshold,
        widget.foreground_threshold, widget.split, widget.min_size,
        header("Computation"), widget.tile, widget.overlap, widget.device,
        widget.engine, widget.tta, widget.probabilities, widget.stitch_threshold, widget.block,
        widget.scheduler,
        widget.retrain.learning_rate,
        header("BioImage.IO"), widget.export_path, widget.export_button,
    )  # fmt: skip


def add_detection_settings(widget: Any) -> None:
    """The instance post-processing rows (values: the engine's defaults until a card is read)."""
    widget.seed_threshold = FloatSpinBox(
        label="Seed threshold", value=0.5, min=0.05, max=0.95, step=0.05,
        tooltip="interior probability above which a pixel seeds an object: higher finds fewer, "
        "surer objects and splits fewer touching ones (from the model card)",
    )  # fmt: skip
    widget.foreground_threshold = FloatSpinBox(
        label="Foreground threshold", value=0.5, min=0.05, max=0.95, step=0.05,
        tooltip="foreground probability above which a pixel belongs to an object: higher "
        "gives smaller objects (from the model card)",
    )  # fmt: skip
    widget.split = FloatSpinBox(
        label="Split touching (px)", value=0.0, min=0.0, max=100.0, step=0.5,
        tooltip="split a blob of touching objects where its distance map has peaks at least "
        "this many pixels high; 0 = one object per blob of interior (from the model card)",
    )  # fmt: skip
    widget.min_size = SpinBox(
        label="Min. object size (px)", value=10, min=0, max=10_000_000,
        tooltip="objects with fewer pixels (voxels in 3D) are removed (from the model card)",
    )  # fmt: skip


def model_card(source: str, model_file: Any) -> dict[str, Any]:
    """The card of the Segment dock's model choice (``{}`` when it cannot be read).

    Reads a model file's JSON document only, not its weights; imports torch (call it when
    torch is imported, or from a run). A BioImage.IO package brings its own post-processing:
    ``{}``.
    """
    from ...common.errors import UserInputError
    from ...model.files import builtin_model_path, read_card
    from .. import _model_registry as registry

    try:
        if source == FROM_FILE:
            path = Path(model_file)
            if path.suffix != ".safetensors" or not path.is_file():
                return {}
            return read_card(path)
        if source.startswith(TRAINED):
            model = registry.get_model(source[len(TRAINED) :])
            return dict(getattr(model, "card", None) or {})  # any registered object
        return read_card(builtin_model_path("nuclei"))
    except (UserInputError, OSError):  # ModelFileError is a UserInputError
        return {}


def card_postprocessing(card: dict[str, Any]) -> dict[str, float]:
    """The instance post-processing a run uses with a model of this ``card`` (keys
    :data:`POST_KEYS`): the card's ``postprocessing`` entry over the engine's defaults."""
    import inspect
    from types import SimpleNamespace

    from ...inference.inputs import postprocessing_settings
    from ...inference.labels.postprocess import instance_labels

    params = inspect.signature(instance_labels).parameters
    engine = {key: params[key].default for key in POST_KEYS}
    return {**engine, **postprocessing_settings(SimpleNamespace(card=card or {}))}


def changed_postprocessing(
    values: dict[str, float], defaults: dict[str, float]
) -> dict[str, float]:
    """The settings in ``values`` that differ from the card's ``defaults`` (what a run passes
    on: the model actually used, e.g. the H&E model a stained image is routed to, keeps its own
    card's values for the rest)."""
    return {
        key: value
        for key, value in values.items()
        if key not in defaults or abs(float(value) - float(defaults[key])) > 1e-6
    }
