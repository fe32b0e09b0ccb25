"""The ``rdf.yaml`` content of a napari-unet model: tensors, processing, weights, citations.

Everything here is plain data (dicts and lists, as in the YAML file); :mod:`.export` hands it
to ``bioimageio.spec.build_description``, which validates it against the spec (0.5).

Tensors: one input ``raw`` (batch, channel, [z,] y, x) whose spatial sizes are ``min + n * step``
with ``step = 2**depth`` (the pooling grid) and ``min`` the first size above twice the halo,
and one output ``probabilities`` (batch, class, [z,] y, x) of the input's size. The halo is the
network's receptive field (:func:`~napari_unet.model.receptive.receptive_field`) rounded up to
half a step, so a tile padded by the halo stays on the pooling grid: a consumer that tiles
with this halo gets the result of one pass over the whole image.

Processing: the card's normalisation as ``scale_range`` (percentiles per channel over the
spatial axes), the softmax over classes (sigmoid for one class) as post-processing. The
instance step (seeded watershed of the interior probability) has no spec operation; it is
described in the documentation and in ``config.napari_unet.postprocessing``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..model.receptive import receptive_field
from ..model.unet import UNet

INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
#: where the napari-unet card (and architecture) lives in the package's ``config``
CONFIG_KEY = "napari_unet"

UNET_CITATION = {
    "text": (
        "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015, LNCS 9351, pp. 234-241."
    ),
    "doi": "10.1007/978-3-319-24574-4_28",
}
DSB_CITATION = {
    "text": (
        "Caicedo et al. Nucleus segmentation across imaging experiments: the 2018 Data "
        "Science Bowl. Nature Methods 16, 1247-1253 (2019)."
    ),
    "doi": "10.1038/s41592-019-0612-7",
}
#: the built-in model's training data (an inline dataset description)
DSB_DATASET = {
    "type": "dataset",
    "format_version": "0.3.0",
    "name": "DSB 2018 nuclei (BBBC038), fluorescence subset",
    "description": (
        "Stage-1 training images of the 2018 Data Science Bowl (BBBC038, Broad Bioimage "
        "Benchmark Collection), fluorescence subset, with instance annotations; CC0."
    ),
    "cite": [DSB_CITATION],
    "license": "CC0-1.0",
}


def spatial_axes(model: UNet) -> list[str]:
    """The spatial axis ids of the package's tensors: ``["y", "x"]`` or ``["z", "y", "x"]``."""
    return ["z", "y", "x"][-model.ndim :]


def package_halo(model: UNet) -> int:
    """The output halo: the receptive field, rounded up so that ``2 * halo`` is a whole step."""
    step = 2**model.config.depth
    half = max(step // 2, 1)
    return int(math.ceil(max(receptive_field(model)) / half) * half)


def size_rule(model: UNet) -> dict[str, int]:
    """``{"min": ..., "step": ...}``: the input sizes the package accepts per spatial axis.

    For ``padding="same"`` networks ``step = 2**depth`` and ``min`` is the first multiple of
    it above ``2 * halo`` (a tile must keep some output once the halo is cropped).
    """
    if model.config.padding != "same":
        raise NotImplementedError(
            "only padding='same' U-Nets can be exported as BioImage.IO packages"
        )
    step = 2**model.config.depth
    return {"min": step * (2 * package_halo(model) // step + 1), "step": step}


def identifier(name: str, fallback: str) -> str:
    """``name`` as a spec identifier (letters, digits, underscores), or ``fallback``."""
    clean = re.sub(r"\W+", "_", str(name)).strip("_")
    return clean if clean and not clean[0].isdigit() else fallback


#: what the network of a model whose card has ``colour_input`` takes, in words for the package
#: (the spec allows 128 characters)
COLOUR_INPUTS = {
    "optical_density": (
        "optical density of a stained RGB slide, not raw intensities: -log((I + 1) / 256), "
        "I = R, G, B on 0-255",
        ["od_red", "od_green", "od_blue"],
    ),
    "haematoxylin": (
        "haematoxylin of a stained RGB slide, not raw intensities: skimage.color.rgb2hed channel 0",
        ["haematoxylin"],
    ),
}


def input_tensor(model: UNet, test_file: str) -> dict[str, Any]:
    rule = size_rule(model)
    channels = [f"channel{i}" for i in range(model.in_channels)]
    description = "raw image intensities, one channel per input channel of the U-Net"
    view = COLOUR_INPUTS.get((model.card or {}).get("colour_input"))
    if view is not None and len(view[1]) == model.in_channels:
        description, channels = view
    axes = [{"type": "batch"}, {"type": "channel", "channel_names": channels}]
    axes += [{"type": "space", "id": a, "size": dict(rule)} for a in spatial_axes(model)]
    return {
        "id": INPUT_ID,
        "description": description,
        "axes": axes,
        "test_tensor": {"source": test_file},
        "data": {"type": "float32"},
        "preprocessing": preprocessing(model),
    }


def preprocessing(model: UNet) -> list[dict[str, Any]]:
    """The card's normalisation as spec operations (``scale_range`` per channel)."""
    spec = model.card.get("normalization") or {"method": "percentile", "low": 1.0, "high": 99.8}
    method = spec.get("method", "percentile")
    if method == "none":
        return []
    low, high = (0.0, 100.0) if method == "minmax" else (spec["low"], spec["high"])
    kwargs = {"axes": spatial_axes(model), "min_percentile": low, "max_percentile": high}
    return [{"id": "scale_range", "kwargs": kwargs}]


def output_tensor(model: UNet, test_file: str, class_names: list[str]) -> dict[str, Any]:
    halo = package_halo(model)
    names = [identifier(n, f"class{i}") for i, n in enumerate(class_names)]
    axes = [{"type": "batch"}, {"type": "channel", "channel_names": names}]
    axes += [
        {
            "type": "space",
            "id": a,
            "size": {"tensor_id": INPUT_ID, "axis_id": a},
            "halo": halo,
        }
        for a in spatial_axes(model)
    ]
    last = (
        {"id": "sigmoid"}
        if model.num_classes == 1
        else {"id": "softmax", "kwargs": {"axis": "channel"}}
    )
    return {
        "id": OUTPUT_ID,
        "description": "class probabilities: " + ", ".join(class_names),
        "axes": axes,
        "test_tensor": {"source": test_file},
        "data": {"type": "float32", "range": [0.0, 1.0]},
        "postprocessing": [last],
    }


def weights(
    model: UNet, state_dict_file: str, torchscript_file: str, onnx_file: str | None = None
) -> dict[str, Any]:
    """The weight entries: ``pytorch_state_dict`` (our UNet), ``torchscript`` [, ``onnx``]."""
    import torch

    version = torch.__version__.split("+")[0]
    extra = {}
    if onnx_file is not None:
        from ..model.export import OPSET

        extra["onnx"] = {
            "source": onnx_file,
            "opset_version": OPSET,
            "parent": "pytorch_state_dict",
        }
    return {
        "pytorch_state_dict": {
            "source": state_dict_file,
            "architecture": {
                "callable": "UNet",
                "import_from": "napari_unet.model.unet",
                "kwargs": model.config.to_dict(),
            },
            "pytorch_version": version,
        },
        "torchscript": {
            "source": torchscript_file,
            "pytorch_version": version,
            "parent": "pytorch_state_dict",
        },
        **extra,
    }


def is_builtin(model: UNet) -> bool:
    """Whether ``model`` is (a copy of) the built-in nuclei model, judged by its card."""
    card = model.card or {}
    return (
        card.get("name") == "nuclei"
        and (card.get("provenance") or {}).get("data_fingerprint") == _BUILTIN_FINGERPRINT
    )


_BUILTIN_FINGERPRINT = "46db334c1c6d6bea"


def tags(model: UNet) -> list[str]:
    task = model.card.get("task", "semantic")
    out = ["napari-unet", "unet", "pytorch", f"{model.ndim}d", "segmentation"]
    out.append("instance-segmentation" if task == "instance" else "semantic-segmentation")
    if is_builtin(model):
        out += ["nuclei", "fluorescence-light-microscopy"]
    return out
