"""The files inside an exported package: weights, test tensors, cover image, documentation."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common.errors import ShapeError, UserInputError
from ..model.unet import UNet
from .describe import COLOUR_INPUTS, package_halo, size_rule

log = logging.getLogger(__name__)


def write_state_dict(model: UNet, path: Path) -> Path:
    """The weights as a plain tensor dict (``torch.load(weights_only=True)`` reads it)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def write_torchscript(model: UNet, path: Path, example_shape: tuple[int, ...]) -> Path:
    """``model`` traced to TorchScript on a zero input of ``example_shape`` (N, C, ...)."""
    net = copy.deepcopy(model).cpu().eval()
    net.card = {}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the shape checks of UNet.forward are Python; tracing records them as constants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, torch.zeros(example_shape), check_trace=False)
    traced.save(str(path))
    return path


def test_image(model: UNet, image: np.ndarray | None) -> np.ndarray:
    """The test input ``(1, C, *spatial)`` float32: ``image`` or the bundled sample, cropped.

    The crop is centred and as large as possible with sizes the package accepts
    (``min + n * step``).

    Parameters
    ----------
    image : ndarray of shape ([C,] [Z,] Y, X), optional
        Real data for the test tensors; default: the bundled DSB 2018 sample (2D models; its
        one channel is repeated for models with more input channels, or, for a model that
        takes the optical density of stained slides, rendered as one: :func:`stained_density`).
    """
    if image is None:
        if model.ndim != 2:
            raise UserInputError(
                "a 3D model needs a test image: pass test_image= (an array (C, Z, Y, X) of "
                "real data at least as large as the package's minimum tile)"
            )
        from ..common.sample import load_sample

        grey = load_sample()[0]
        if (model.card or {}).get("colour_input") == "optical_density":
            image = stained_density(grey)
        else:
            image = np.repeat(grey[None], model.in_channels, axis=0)
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == model.ndim:
        arr = arr[None]
    if arr.ndim != model.ndim + 1 or arr.shape[0] != model.in_channels:
        raise ShapeError(
            f"test_image must have shape (C, {'Z, ' if model.ndim == 3 else ''}Y, X) with "
            f"C={model.in_channels}, got {arr.shape}"
        )
    rule = size_rule(model)
    box = []
    for n in arr.shape[1:]:
        if n < rule["min"]:
            raise ShapeError(
                f"test_image is {arr.shape[1:]} px; the package needs at least {rule['min']} px "
                f"per spatial axis (twice the halo of {package_halo(model)} px, on the "
                f"{rule['step']} px grid): pass a larger image"
            )
        size = rule["min"] + (n - rule["min"]) // rule["step"] * rule["step"]
        box.append(slice((n - size) // 2, (n - size) // 2 + size))
    return np.ascontiguousarray(arr[(slice(None), *box)][None])


def _input_words(model: UNet) -> str:
    view = COLOUR_INPUTS.get((model.card or {}).get("colour_input"))
    return "raw intensities" if view is None else view[0]


def stained_density(grey: np.ndarray) -> np.ndarray:
    """The optical density ``(3, Y, X)`` of ``grey`` rendered as a stained slide.

    The grey nuclei image's intensity (0-255) becomes the amount of haematoxylin (up to 1.5),
    on a little eosin (0.1) everywhere, mixed with Ruifrok & Johnston's stain vectors
    (:data:`skimage.color.rgb_from_hed`): what a model of stained slides takes, from the
    bundled sample's real nuclei.
    """
    from skimage.color import rgb_from_hed

    amount = np.stack([np.asarray(grey, np.float32) / 255.0 * 1.5, np.full(grey.shape, 0.1)])
    stains = np.asarray(rgb_from_hed[:2], np.float32)  # (stain, colour) optical densities
    return np.einsum("syx,sc->cyx", amount.astype(np.float32), stains).astype(np.float32)


def write_cover(path: Path, image: np.ndarray, probs: np.ndarray) -> Path:
    """A PNG of the input (grey) beside the output (classes as colours): ``input | output``.

    Parameters
    ----------
    image : ndarray of shape (C, [Z,] Y, X)
    probs : ndarray of shape (K, [Z,] Y, X)
    """
    import matplotlib.image

    grey = _middle_2d(image[0])
    lo, hi = np.percentile(grey, [1, 99.8])
    grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    left = np.repeat(grey[..., None], 3, axis=-1)
    right = _colour(np.stack([_middle_2d(p) for p in probs]))
    gap = np.ones((left.shape[0], 8, 3))
    matplotlib.image.imsave(path, np.concatenate([left, gap, right], axis=1))
    return path


def _middle_2d(plane: np.ndarray) -> np.ndarray:
    return plane[plane.shape[0] // 2] if plane.ndim == 3 else plane


def _colour(probs: np.ndarray) -> np.ndarray:
    """RGB of class probabilities ``(K, Y, X)``: class k > 0 gets colour k, background black."""
    if len(probs) == 1:
        return np.repeat(probs[0][..., None], 3, axis=-1)
    palette = np.array([[0, 0, 0], [0.2, 0.9, 0.3], [0.95, 0.2, 0.8], [0.2, 0.5, 1.0]])
    colours = np.array([palette[k % len(palette)] if k else palette[0] for k in range(len(probs))])
    return np.clip(np.einsum("kyx,kc->yxc", probs, colours), 0, 1)


def write_documentation(path: Path, model: UNet, info: dict[str, Any]) -> Path:
    """``README.md`` of the package: what the model does, how to run it, validation, citations."""
    card = model.card
    post = card.get("postprocessing") or {}
    metrics = card.get("metrics") or {}
    lines = [
        f"# {info['name']}",
        "",
        info["description"],
        "",
        "A U-Net (Ronneberger et al. 2015) exported by "
        "[napari-unet](https://github.com/napari-unet/napari-unet): "
        f"{model.ndim}D, {model.in_channels} input channel(s), classes "
        f"{', '.join(card.get('class_names', []))}; depth {model.config.depth}, "
        f"{model.config.base_filters} base filters.",
        "",
        "## Inputs and outputs",
        "",
        f"- input `raw`: {_input_words(model)}; normalised per channel by the `scale_range` "
        "pre-processing (the percentiles of the model card).",
        f"- output `probabilities`: softmax class probabilities, the input's size; tiles "
        f"need a halo of {package_halo(model)} px (the network's receptive field).",
        "",
    ]
    if card.get("task") == "instance":
        lines += [
            "## Instance post-processing",
            "",
            "napari-unet turns the probabilities into instance labels with a seeded "
            "watershed: seeds are connected regions where the interior probability exceeds "
            f"`seed_threshold` ({post.get('seed_threshold', 0.5)}) after splitting touching "
            f"objects at h-maxima of height `split` ({post.get('split', 'off')}) px of the "
            "distance transform; they grow over pixels whose foreground probability "
            f"(interior + boundary) exceeds `foreground_threshold` "
            f"({post.get('foreground_threshold', 0.5)}); objects smaller than `min_size` "
            f"({post.get('min_size', 10)}) px are removed. The settings are also in "
            "`config.napari_unet.postprocessing`. `napari-unet segment --model PACKAGE.zip` "
            "runs it.",
            "",
        ]
    lines += ["## Validation", ""]
    if metrics:
        lines += [f"- {k}: {v}" for k, v in sorted(metrics.items()) if not isinstance(v, dict)]
    else:
        lines.append("No validation metrics were recorded in the model card.")
    lines += ["", "## Training data", "", info.get("training_data_text") or "Not recorded.", ""]
    lines += ["## Citations", ""] + [f"- {c['text']} doi:{c['doi']}" for c in info["cite"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
