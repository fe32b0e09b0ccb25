"""The Train widget's worker job: read the pairs, train, and preview now and then.

:func:`training_job` is a generator run by napari's ``thread_worker``. It relays every event
of :func:`napari_unet.training.loop.train_iter` and adds its own: :class:`DataReady` once the
data is prepared, :class:`PreviewReady` every few epochs with a prediction of the best model
so far on the slice the user is looking at and, on request, :class:`HeldBackScores` at the
end: the new model and the model it would replace segment the held-back (validation) images
as Segment would, and are scored there. It returns the core's
:class:`~napari_unet.training.loop.TrainResult`. It gets arrays, never layers.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._train_inputs import PairSource, channel_axis, expand_sources, lead_channel_first

if TYPE_CHECKING:
    from ...model.unet import UNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataReady:
    """The training pairs are read and prepared.

    ``validation``: what the run validates on: ``"strip"`` (a held-back strip of its one
    image), ``"images"`` (held-back images) or ``"training"`` (its training images).
    """

    n_pairs: int
    names: tuple[str, ...]
    validation: str = "images"
    seen_as: str = ""
    """What was done to the images so the network learns them as Segment will show them
    (:func:`napari_unet.training.arrays.segment_view`), ``""`` when nothing was."""


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


@dataclass(frozen=True)
class Comparing:
    """The run is over; the new model and the current one now segment ``n_images`` images."""

    n_images: int


#: how far ahead (AP@0.5 on the held-back data) a new model must be to replace the one in use
MARGIN = 0.05
#: fewer annotated objects than this on the held-back pixels give no verdict: an AP@0.5 on a
#: handful of objects moves by 0.1-0.3 with one object (bench_correct_retrain.py: on H&E, 30
#: corrected objects left ~5 in the strip, and the models taken there lost 0.03-0.04 AP@0.5)
MIN_OBJECTS = 10


@dataclass(frozen=True)
class HeldBackScores:
    """AP@0.5 of the new model and of the model it would replace, on held-back images.

    The held-back images are the run's validation images, which it did not train on; each
    model segments them as the Segment dock does (its own post-processing and object size).

    Attributes
    ----------
    new_ap50, old_ap50 : float or None
        Mean over the images of AP at IoU 0.5 (``TP / (TP + FP + FN)``) inside the annotated
        region; None when there was nothing to compare on (``reason`` says why).
    n_images : int
        Held-back images (0: the run validated on its training images).
    reason : str
        Why there are no scores, in plain words ("" when there are).
    unit : {"image", "strip"}
        What was held back of each image: the whole image, or a strip of it (a run on fewer
        than :data:`~napari_unet.training.validation.STRIPS_BELOW` images).
    n_objects : int or None
        Annotated objects on the held-back pixels (None: not counted). Fewer than
        :data:`MIN_OBJECTS` give no verdict: the model in use is kept.
    """

    new_ap50: float | None
    old_ap50: float | None
    n_images: int
    reason: str = ""
    unit: str = "image"
    n_objects: int | None = None

    @property
    def too_few(self) -> bool:
        """Whether the held-back pixels hold too few objects for a verdict."""
        return self.n_objects is not None and self.n_objects < MIN_OBJECTS

    @property
    def beats(self) -> bool:
        """Whether the new model scored at least :data:`MARGIN` higher than the one it would
        replace: a held-back strip or image holds few objects, and a smaller lead is within
        its noise (bench_correct_retrain.py: a one-image model 0.027 ahead on its strip lost
        0.088 AP@0.5 on the other images of its kind)."""
        if self.new_ap50 is None or self.old_ap50 is None or self.too_few:
            return False
        return self.new_ap50 >= self.old_ap50 + MARGIN

    def describe(self, new_name: str, old_name: str, where: str = "Model") -> str:
        """Which model the Segment docks use now, and why, in plain words.

        ``where`` names the box in which the user can pick the new model anyway.
        """
        if self.unit == "strip":
            images = "its held-back strip" if self.n_images == 1 else "the held-back strips"
        else:
            images = f"{self.n_images} held-back image{'s' if self.n_images != 1 else ''}"
        if self.beats:
            return (
                f"now using the new model {new_name!r}: it scored AP@0.5 {self.new_ap50:.3f} "
                f"on {images} against {self.old_ap50:.3f} for {old_name!r}"
            )
        if self.new_ap50 is not None and self.too_few:
            held = "it holds" if self.n_images == 1 else "they hold"
            return (
                f"kept {old_name!r}: the new model {new_name!r} scored AP@0.5 "
                f"{self.new_ap50:.3f} on {images} against {self.old_ap50:.3f}, but {held} only "
                f"{self.n_objects} annotated object{'s' if self.n_objects != 1 else ''}, too "
                f"few to judge; pick it in {where} to use it anyway, or correct more"
            )
        if self.new_ap50 is not None:
            return (
                f"kept {old_name!r}: the new model {new_name!r} scored AP@0.5 "
                f"{self.new_ap50:.3f} on {images} against {self.old_ap50:.3f} (not "
                f"{MARGIN:.2f} or more ahead); pick it in {where} to use it anyway"
            )
        return (
            f"kept {old_name!r}: {self.reason}, so the new model {new_name!r} was not "
            f"compared with it; pick it in {where} to use it"
        )


#: ``compare_with`` of :func:`training_job` when nothing is to be compared
NO_COMPARISON = object()


def training_job(
    sources: list[PairSource],
    config: Any,
    stop: threading.Event,
    *,
    init: str | Path | UNet | None = None,
    ignore_label: int | None = None,
    preview: PreviewSpec | None = None,
    compare_with: Any = NO_COMPARISON,
    invert: str = "auto",
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
    compare_with : model, optional
        The model the new one would replace (as :func:`napari_unet.segment` takes it: None is
        the built-in model of the image's kind): after training, both segment the held-back
        images and a :class:`HeldBackScores` is yielded (after :class:`Comparing`).
        With fewer than :data:`~napari_unet.training.validation.STRIPS_BELOW` images, the
        held-back images are strips of them (``config.hold_back``).
    invert : {"auto", "yes", "no"}
        How the models segment the held-back images: ``"no"`` for images already prepared as
        the network sees them (:func:`napari_unet.inference.pipeline.model_input`).
    """
    from ...training.arrays import prepare_data, segment_view
    from ...training.events import EpochEnd
    from ...training.loop import new_model, train_iter
    from ...training.validation import split_strips, split_validation

    model = None
    if init is not None:
        from ...model.files import load_model
        from ...training.config import config_for_model

        if isinstance(init, str | Path):
            model = load_model(init, device="cpu")
        else:  # a model of this session: train a copy, the original stays usable
            model = copy.deepcopy(init).cpu()
        config = config_for_model(config, model)
    images, labels, regions, names = expand_sources(sources, config.ndim, ignore_label)
    shown, seen_as = images, ""
    if invert != "no":  # layers as they are: learnt as Segment will show them to the network
        shown, seen_as = segment_view(images, config, model)
    pairs = prepare_data(
        shown, labels, config, regions=regions, names=names, ignore_label=ignore_label
    )
    del shown  # the held-back images below stay as they are: Segment decides on them again
    # the split train_iter would make, made here to know the held-back images
    strips = split_strips(pairs, config.hold_back)
    if strips is not None:  # a few images: a strip of each is held back
        train_pairs, val_pairs, where = strips
        held_back = [
            _annotated(images[i], labels[i], _only(regions[i], labels[i].shape, cut), ignore_label)
            for i, cut in enumerate(where)
        ]
    else:
        train_pairs, val_pairs = split_validation(pairs, config.val_fraction, config.seed)
        held = [
            i for i, p in enumerate(pairs) if val_pairs is not train_pairs and _among(p, val_pairs)
        ]
        held_back = [_annotated(images[i], labels[i], regions[i], ignore_label) for i in held]
    del images, labels, regions
    validation = (
        "strip" if strips is not None else "images" if val_pairs is not train_pairs else "training"
    )
    yield DataReady(len(pairs), tuple(names), validation, seen_as)
    if model is None:  # made here, not in train_iter: the preview reads its weights
        model = new_model(config, pairs[0].image.shape[0], config.resolved_num_classes(pairs))
    working = working_diameter(pairs, config, model) if preview is not None else None
    gen = train_iter(train_pairs, val_pairs, config, model=model, stop=stop)
    best_state = None
    while True:
        try:
            event = next(gen)
        except StopIteration as done:
            result = done.value
            if compare_with is not NO_COMPARISON and result.best_epoch >= 0:
                if held_back and not stop.is_set():
                    yield Comparing(len(held_back))
                scores = held_back_scores(
                    result.model, compare_with, held_back, config, stop, invert=invert
                )
                yield replace(scores, unit="strip") if strips is not None else scores
            return result
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


def held_back_scores(
    model: Any,
    rival: Any,
    held_back: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    config: Any,
    stop: threading.Event | None = None,
    invert: str = "auto",
) -> HeldBackScores:
    """AP@0.5 of ``model`` and of ``rival`` on the held-back ``(image, labels, region)``.

    Parameters
    ----------
    model : UNet
        The new model.
    rival : UNet, path, built-in name or None
        The model it would replace, as :func:`napari_unet.segment` takes it.
    held_back : list of (ndarray, ndarray of int, bool ndarray or None)
        Images (``(*spatial)``, ``(Y, X, 3|4)`` for RGB or ``(C, *spatial)``, as
        :func:`expand_sources` gives them), their labels and the annotated region.
    config : TrainConfig
        The run's settings (its ``ndim``, ``task`` and ``device``).
    stop : threading.Event, optional
        Set: no comparison (the user stopped the run).
    invert : {"auto", "yes", "no"}
        As :func:`napari_unet.segment` takes it (``"no"``: the images are prepared already).

    Returns
    -------
    HeldBackScores
        Without scores (and with the reason) when nothing was held back, the run was
        stopped, a model is not an instance model, or a model could not segment the images.
    """
    n = len(held_back)
    if not held_back:
        why = "no image was held back (the run validated on its training images)"
        return HeldBackScores(None, None, 0, why)
    if stop is not None and stop.is_set():
        return HeldBackScores(None, None, n, "the run was stopped")
    try:
        if config.task != "instance" or model_task(rival) != "instance":
            return HeldBackScores(None, None, n, "AP@0.5 compares instance models only")
        new = _mean_ap50(model, held_back, config, invert)
        old = _mean_ap50(rival, held_back, config, invert)
    except Exception as err:  # the trained model must survive a failed comparison
        log.warning("held-back comparison failed", exc_info=err)
        return HeldBackScores(None, None, n, f"they could not be compared ({err})")
    return HeldBackScores(new, old, n, n_objects=_count_objects(held_back))


def _count_objects(held_back: list) -> int:
    """Annotated objects with a pixel on the held-back pixels (their region, if any)."""
    count = 0
    for _, labels, region in held_back:
        ids = labels if region is None else labels[np.asarray(region, bool)]
        count += int(np.count_nonzero(np.unique(ids)))
    return count


def _only(region: np.ndarray | None, shape: tuple[int, ...], where: tuple[slice, ...]):
    """``region`` (None: everywhere) restricted to the held-back strip ``where``: the models
    segment the whole image, with its context, and are scored on the strip alone."""
    strip = np.zeros(shape, bool)
    strip[where] = True
    return strip if region is None else (strip & (np.asarray(region) != 0))


def _annotated(
    image: np.ndarray, labels: np.ndarray, region: np.ndarray | None, ignore_label: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(image, labels, region)`` with the ignore label's pixels out of the region."""
    if ignore_label is None or not np.any(labels == ignore_label):
        return image, labels, region
    unlabelled = labels == ignore_label
    region = ~unlabelled if region is None else (region & ~unlabelled)
    return image, np.where(unlabelled, 0, labels), region


def _among(pair: Any, pairs: list) -> bool:
    return any(pair is p for p in pairs)


def _mean_ap50(model: Any, held_back: list, config: Any, invert: str = "auto") -> float:
    """Mean AP@0.5 of ``model`` (segmenting as the Segment dock does) on ``held_back``."""
    from ...evaluation.instances import average_precision
    from ...inference.pipeline import segment

    scores = []
    for image, labels, region in held_back:
        predicted = segment(
            image,
            model,
            axes=_axes_as_read(image, labels, config.ndim),
            output="instance",
            device=config.device,
            engine="torch",
            invert=invert,
        )
        ap = average_precision(labels, np.asarray(predicted), (0.5,), region=region)
        scores.append(float(ap.mean))
    return float(np.mean(scores))


def _axes_as_read(image: np.ndarray, labels: np.ndarray, ndim: int) -> str:
    """The axes of a held-back image as :func:`._train_inputs.expand_sources` gives it."""
    spatial = "ZYX"[-ndim:]
    if image.ndim == labels.ndim:
        return spatial
    if ndim == 2 and image.shape[:-1] == labels.shape and image.shape[-1] in (3, 4):
        return spatial + "C"  # an RGB layer: Segment reads it as colour
    return "C" + spatial


def _card_of(ref: Any) -> dict:
    """The card of a model, a built-in model name or a model file (no weights read)."""
    from ...model.files import BUILTIN_MODELS, builtin_model_path, read_card

    if isinstance(ref, str | Path):
        ref = str(ref)
        return read_card(builtin_model_path(ref) if ref in BUILTIN_MODELS else ref)
    return getattr(ref, "card", None) or {}


def model_task(ref: Any) -> str:
    """The task of a model, a built-in model or a model file (from its card, no weights);
    ``None`` is the built-in model."""
    if ref is None:
        return "instance"
    return str(_card_of(ref).get("task", "instance"))


def retrain_augment(ref: Any):
    """The augmentation of a fine-tune of ``ref``: the defaults, with the stain mixing and the
    blur that ``ref`` itself learnt with (:func:`napari_unet.training.augment.learnt_with`).

    Returns
    -------
    napari_unet.training.augment.AugmentConfig
    """
    from ...training.augment import AugmentConfig, learnt_with

    return AugmentConfig(**learnt_with(_card_of(ref)))


def working_diameter(pairs: list, config: Any, model: Any) -> float | None:
    """The object size (px) :func:`~napari_unet.training.loop.train_iter` resamples the
    training images to for ``model`` (None: not resampled); the same validation split."""
    from ...training.data.working_size import resolve_working_size
    from ...training.validation import can_split, split_validation

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
    from ...inference.images.normalize import normalize
    from ...inference.labels.postprocess import instance_labels, semantic_labels
    from ...inference.sizing.rescale import resize
    from ...inference.tiling.predict import predict_tiled

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
    from ...training.data.pairs import object_diameters
    from ...training.data.working_size import pair_factor

    labels = np.asarray(source.labels[index])
    if source.region is not None:
        labels = np.where(np.asarray(source.region[index]) != 0, labels, 0)
    return pair_factor(object_diameters(np.maximum(labels, 0).astype(np.int64)), working)
