"""The Train widget's worker job: read the pairs, train, and preview now and then.

:func:`training_job` is a generator run by napari's ``thread_worker``. It relays every event
of :func:`napari_unet.training.loop.train_iter` and adds two of its own: :class:`DataReady`
once the data is prepared, and :class:`PreviewReady` every few epochs with a prediction of the
best model so far on the slice the user is looking at. It returns the core's
:class:`~napari_unet.training.loop.TrainResult`. It gets arrays, never layers.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._train_inputs import PairSource, channel_axis, expand_sources, lead_channel_first

if TYPE_CHECKING:
    from ..model.unet import UNet


@dataclass(frozen=True)
class DataReady:
    """The training pairs are read and prepared."""

    n_pairs: int
    names: tuple[str, ...]


@dataclass(frozen=True)
class PreviewReady:
    """Labels predicted by the best model so far on one 2D slice.

    Attributes
    ----------
    index : tuple of int
        Index of the slice in the labels' leading axes (``labels.ndim - 2`` numbers).
    labels : ndarray of int32, shape (Y, X)
    """

    epoch: int
    index: tuple[int, ...]
    labels: np.ndarray


@dataclass(frozen=True)
class PreviewSpec:
    """What to preview: the first pair's image, every ``every`` epochs, at ``index()``.

    ``index`` is called in the worker and returns the leading indices (``labels.ndim - 2``
    numbers) of the slice shown in the viewer; the widget keeps it up to date.
    """

    source: PairSource
    every: int
    index: Callable[[], tuple[int, ...]]


def training_job(
    sources: list[PairSource],
    config: Any,
    stop: threading.Event,
    *,
    init: str | Path | UNet | None = None,
    ignore_label: int | None = None,
    preview: PreviewSpec | None = None,
) -> Generator[Any, None, Any]:
    """Prepare the data, train, and return the :class:`TrainResult`.

    Parameters
    ----------
    sources : list of PairSource
        Checked with :func:`check_sources`.
    config : TrainConfig
    stop : threading.Event
        Set it to stop after the current batch; the best model so far is returned.
    init : str, Path or UNet, optional
        A model to fine-tune (a built-in name, a model file, or a model of this session, which
        is copied) instead of a new network; its
        architecture and normalisation replace ``config``'s
        (:func:`~napari_unet.training.config.config_for_model`).
    ignore_label : int, optional
        Label value of unannotated pixels.
    preview : PreviewSpec, optional
        Predict a slice every ``preview.every`` epochs.
    """
    from ..training.arrays import prepare_data
    from ..training.events import EpochEnd
    from ..training.loop import new_model, train_iter

    model = None
    if init is not None:
        from ..model.files import load_model
        from ..training.config import config_for_model

        if isinstance(init, str | Path):
            model = load_model(init, device="cpu")
        else:  # a model of this session: train a copy, the original stays usable
            model = copy.deepcopy(init).cpu()
        config = config_for_model(config, model)
    images, labels, regions, names = expand_sources(sources, config.ndim, ignore_label)
    pairs = prepare_data(
        images, labels, config, regions=regions, names=names, ignore_label=ignore_label
    )
    del images, labels, regions
    yield DataReady(len(pairs), tuple(names))
    if model is None:  # made here, not in train_iter: the preview reads its weights
        model = new_model(config, pairs[0].image.shape[0], config.resolved_num_classes(pairs))
    working = working_diameter(pairs, config, model) if preview is not None else None
    gen = train_iter(pairs, None, config, model=model, stop=stop)
    best_state = None
    while True:
        try:
            event = next(gen)
        except StopIteration as done:
            return done.value
        yield event
        if not isinstance(event, EpochEnd):
            continue
        if event.is_best:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        due = preview is not None and (event.epoch + 1) % preview.every == 0
        if due and best_state is not None and not stop.is_set():
            net = copy.deepcopy(model)
            net.load_state_dict(best_state)
            index = tuple(preview.index())
            labels = predict_slice(net, preview.source, index, config, working)
            yield PreviewReady(event.epoch, index, labels)


def working_diameter(pairs: list, config: Any, model: Any) -> float | None:
    """The object size (px) :func:`~napari_unet.training.loop.train_iter` resamples the
    training images to for ``model`` (None: not resampled); the same validation split."""
    from ..training.validation import can_split, split_validation
    from ..training.working_size import resolve_working_size

    train_pairs = list(pairs)
    if can_split(train_pairs, config.val_fraction):  # (without its warning a second time)
        train_pairs = split_validation(train_pairs, config.val_fraction, config.seed)[0]
    working = resolve_working_size(train_pairs, config, model)
    return None if working is None else working.diameter


def predict_slice(
    model: Any,
    source: PairSource,
    index: tuple[int, ...],
    config: Any,
    working: float | None = None,
) -> np.ndarray:
    """Labels ``(Y, X)`` of ``model`` on the 2D slice ``index`` of ``source``'s image.

    A 3D model predicts a slab of ``patch depth`` slices around the slice and keeps its middle.
    ``working``: the object size (px) training resamples images to (:func:`working_diameter`);
    a 2D slice is then resampled as training resampled it (by the slice's own objects), so the
    preview shows what the network learns, and the labels are brought back to the slice's
    shape.
    """
    from ..inference.normalize import normalize
    from ..inference.postprocess import instance_labels, semantic_labels
    from ..inference.predict import predict_tiled
    from ..inference.rescale import resize

    n_lead = len(source.labels.shape) - 2
    image = lead_channel_first(source.image, channel_axis(source), n_lead - (config.ndim - 2))
    if config.ndim == 2:
        block, keep = np.asarray(image[index]), None
    else:
        *outer, z = index
        volume = image[tuple(outer)]
        half = config.patch_shape()[0] // 2
        z0, z1 = max(0, z - half), min(volume.shape[1], z + half + 1)
        block, keep = np.asarray(volume[:, z0:z1]), z - z0
    x = normalize(block, config.normalization, channel_axis=0)
    factor = _slice_factor(source, index, working) if keep is None else 1.0
    if factor != 1.0:  # as training resampled this image (after normalising it)
        shape = tuple(max(1, round(n * factor)) for n in x.shape[1:])
        x = resize(x, (x.shape[0], *shape), 1)
    probs = predict_tiled(model, x, device=config.device, engine="torch")  # weights change
    if keep is not None:
        probs = probs[:, keep]
    labels = instance_labels(probs) if config.task == "instance" else semantic_labels(probs)
    return resize(labels, block.shape[1:], 0) if factor != 1.0 else labels


def _slice_factor(source: PairSource, index: tuple[int, ...], working: float | None) -> float:
    """The factor training resamples the 2D slice ``index`` by (1.0 without ``working``)."""
    if working is None:
        return 1.0
    from ..training.data import object_diameters
    from ..training.working_size import pair_factor

    labels = np.asarray(source.labels[index])
    if source.region is not None:
        labels = np.where(np.asarray(source.region[index]) != 0, labels, 0)
    return pair_factor(object_diameters(np.maximum(labels, 0).astype(np.int64)), working)
