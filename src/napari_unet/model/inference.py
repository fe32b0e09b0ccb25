"""An inference copy of a U-Net: eval mode, batch norm folded into the convolutions.

:func:`inference_model` never changes the caller's model: it works on a copy, and caches the
copy (per model, device and parameter version) so that calling it once per frame of a time
series costs nothing. The copy gives the same logits as ``model.eval()(x)`` to within float
rounding (about 1e-5 relative).
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref

import torch
from torch import nn

from .unet import UNet

_LAYOUT = {2: torch.channels_last, 3: torch.channels_last_3d}
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def inference_model(
    model: UNet, device: torch.device, *, fold: bool = True, channels_last: bool = True
) -> UNet:
    """A copy of ``model`` on ``device`` in eval mode, batch norm folded, channels last.

    Parameters
    ----------
    model : UNet
        The trained network; it is not modified.
    device : torch.device
        Where the copy runs.
    fold : bool
        Fold each batch norm into the convolution before it (exact in eval mode).
    channels_last : bool
        Store the weights channels-last (NHWC / NDHWC), the faster layout for CPU
        convolutions; feed it inputs made with :func:`to_model_layout`.

    Returns
    -------
    UNet
        The copy, with ``requires_grad`` off. Do not train it.
    """
    key = (str(device), fold, channels_last, parameter_version(model))
    with _LOCK:
        hit = _CACHE.get(model)
        if hit is not None and hit[0] == key:
            return hit[1]
    net = copy.deepcopy(model).eval()
    if fold:
        fold_batch_norm(net)
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=_LAYOUT[model.ndim])
        net.inference_layout = _LAYOUT[model.ndim]
    for p in net.parameters():
        p.requires_grad_(False)
    with _LOCK:
        _CACHE[model] = (key, net)
    return net


def to_model_layout(x: torch.Tensor, net: nn.Module) -> torch.Tensor:
    """``x`` in the memory layout that :func:`inference_model` gave ``net``."""
    layout = getattr(net, "inference_layout", None)
    return x if layout is None else x.contiguous(memory_format=layout)


def parameter_version(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or changed in place."""
    return tuple(
        (t.data_ptr(), t._version, t.device.type) for t in (*model.parameters(), *model.buffers())
    )


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every ``Conv -> BatchNorm`` pair of ``nn.Sequential`` blocks, in place.

    In eval mode ``bn(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` per output
    channel and ``b' = (b - m) * g / sqrt(v + eps) + beta``. The batch norm becomes an
    ``nn.Identity``. Only call this on an eval-mode copy.
    """
    for block in model.modules():
        if not isinstance(block, nn.Sequential):
            continue
        names = list(block._modules)
        for conv_name, norm_name in itertools.pairwise(names):
            conv, norm = block._modules[conv_name], block._modules[norm_name]
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(
                norm, (nn.BatchNorm2d, nn.BatchNorm3d)
            ):
                _fold(conv, norm)
                block._modules[norm_name] = nn.Identity()
    return model


@torch.no_grad()
def _fold(conv: nn.Conv2d | nn.Conv3d, norm: nn.BatchNorm2d | nn.BatchNorm3d) -> None:
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    shape = (-1,) + (1,) * (conv.weight.ndim - 1)
    weight = conv.weight.double() * scale.reshape(shape)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - norm.running_mean.double()) * scale + norm.bias.double()
    conv.weight.copy_(weight.to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
    else:
        conv.bias.copy_(bias.to(conv.bias.dtype))
