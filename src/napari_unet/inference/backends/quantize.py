"""An int8 copy of an exported model, calibrated on the bundled nuclei sample.

:func:`quantize_int8` turns the float32 ONNX export of a single-channel model into a QDQ
(quantize / dequantize) ONNX graph with int8 weights (per output channel) and uint8
activations, whose ranges come from the bundled sample image normalised as the model's card
says (ONNX Runtime's static quantization). OpenVINO runs such a graph with int8 convolutions
(VNNI / AMX where the CPU has them). The probabilities are *not* equal to torch's within 1e-4
(about 1e-3 on average, 0.1 at worst on the sample): the int8 engine is chosen only on request
(``engine="openvino-int8"``) and judged by the segmentation scores (benchmarks/README.md).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from ...common.atomic import atomic_write
from ...common.errors import UserInputError
from ...common.sample import load_sample
from ...model.unet import UNet
from ..images.normalize import normalize

__all__ = ["calibration_tiles", "quantize_int8"]

log = logging.getLogger(__name__)

#: edge of the calibration tiles cut from the sample (a multiple of 2**depth for depth <= 4)
CALIBRATION_TILE = 256


def calibration_tiles(model: UNet) -> list[np.ndarray]:
    """Inputs ``(1, 1, T, T)`` float32: the four corners of the sample, normalised as the card says."""
    if model.in_channels != 1 or model.ndim != 2:
        raise UserInputError(
            "int8 quantization is calibrated on the bundled single-channel 2D sample; this "
            f"model takes {model.in_channels} channel(s) in {model.ndim}D: use "
            "engine='openvino' or 'onnxruntime'"
        )
    image, _ = load_sample()
    x = normalize(image[None].astype(np.float32), model.card.get("normalization"))[0]
    t = CALIBRATION_TILE
    corners = [x[:t, :t], x[:t, -t:], x[-t:, :t], x[-t:, -t:]]
    return [np.ascontiguousarray(c[None, None], np.float32) for c in corners]


def quantize_int8(model: UNet, source: Path, target: Path) -> Path:
    """Write the int8 QDQ version of the float ONNX file ``source`` to ``target`` (atomically)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    tiles = calibration_tiles(model)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._inputs = iter({"input": t} for t in tiles)

        def get_next(self):
            return next(self._inputs, None)

    with tempfile.TemporaryDirectory(prefix="napari-unet-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        with atomic_write(target) as out:
            quantize_static(
                str(prepared),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    log.info("wrote the int8 model %s", target)
    return target
