"""Export a U-Net to ONNX, the format other inference engines read.

:func:`export_onnx` writes the inference copy of a model (eval mode, batch norm folded) as an
ONNX graph whose batch and spatial axes are dynamic, so one file serves every tile size. It
is written atomically: a half-written file never appears under its final name.
:func:`model_digest` names a model by its weights and architecture, so a cache of exported
files (see :mod:`napari_unet.inference.backends.engines`) can be keyed by it.

The ONNX file holds the logits; the engines apply the softmax (sigmoid for one class)
themselves, like :func:`napari_unet.inference.tiling.tiles.forward_probabilities`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import torch

from ..common.atomic import atomic_write
from .inference import inference_model
from .unet import UNet

__all__ = ["EXPORT_VERSION", "OPSET", "export_onnx", "model_digest"]

log = logging.getLogger(__name__)

#: changes whenever the exported graph would change for the same weights
EXPORT_VERSION = 1
#: the ONNX operator set written
OPSET = 17


def model_digest(model: UNet) -> str:
    """A SHA-256 hex digest of ``model``'s architecture, weights and buffers.

    Two models with equal digests give the same outputs; any change of a weight changes it.
    Costs about one pass over the weights (~30 ms for the 31 MB built-in model).
    """
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(model.config), sort_keys=True).encode())
    h.update(f"export {EXPORT_VERSION}".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_onnx(model: UNet, path: str | os.PathLike) -> Path:
    """Write ``model`` (its inference copy) to ``path`` as ONNX, with dynamic batch and size.

    Parameters
    ----------
    model : UNet
        The network; it is not modified.
    path : path-like
        The ``.onnx`` file to write (replaced atomically).

    Returns
    -------
    Path
        ``path``. The graph takes ``input`` of shape ``(N, C, *spatial)`` float32 (any valid
        spatial size, see :meth:`UNet.output_size`) and gives ``logits`` ``(N, K, *out)``.
    """
    net = inference_model(model, torch.device("cpu"), channels_last=False)
    size = 4 * 2**net.config.depth
    if net.config.padding != "same":
        size = net.valid_sizes_near(size + 64)[1]
    example = torch.zeros(1, net.in_channels, *(size,) * net.ndim)
    in_axes = {0: "batch", **{2 + i: f"in{i}" for i in range(net.ndim)}}
    out_axes = {0: "batch", **{2 + i: f"out{i}" for i in range(net.ndim)}}
    path = Path(path)
    with atomic_write(path) as tmp, warnings.catch_warnings():
        # the legacy TorchScript exporter: no onnxscript needed; the shape checks it traces
        # are constant for valid sizes (center crops of same-padding nets are no-ops)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": in_axes, "logits": out_axes},
            opset_version=OPSET,
            dynamo=False,
        )
    log.info("exported the model to %s", path)
    return path
