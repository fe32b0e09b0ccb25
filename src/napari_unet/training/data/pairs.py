"""Training data: (image, labels[, region]) pairs from arrays or folders, and patch sampling.

A :class:`TrainingPair` holds one normalised image ``(C, *spatial)``, its class targets, its
loss weights and a validity mask. Pixels outside the annotated region (a region mask, or the
ignore label) have validity False and count neither in the loss nor in the metrics.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...common.errors import ShapeError, UserInputError
from ...common.readers import as_label_array, image_name, read_image
from ...common.readers import list_images as _list_images
from ...common.validate import check_labels, check_looks_like_labels, check_not_empty
from ...inference.images.normalize import check_finite, normalize
from ...inference.sizing.size import equivalent_diameters
from .targets import instance_to_classes, unet_weight_map

log = logging.getLogger(__name__)

#: labels whose non-zero pixels equal their right-hand neighbour less often than this are
#: refused as intensity images: objects 2 px wide give 0.5, DSB intensity images 0.08-0.78
#: (evaluation refuses below 0.8: whole label files, not a few small painted objects)
TRAINING_FLATNESS = 0.5


@dataclass
class TrainingPair:
    """One training image with everything the loss needs.

    Attributes
    ----------
    image : ndarray of float32, shape (C, *spatial)
        Normalised image.
    target : ndarray of uint8, shape (*spatial)
        Class ids (semantic) or background/interior/boundary (instance).
    weight : ndarray of float32, shape (*spatial)
        Per-pixel loss weight.
    valid : ndarray of bool, shape (*spatial)
        Where the annotation holds.
    name : str
    """

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    valid: np.ndarray
    name: str = ""
    diameters: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    """Equivalent diameters (pixels) of the annotated objects (instance task)."""
    labels: np.ndarray | None = None
    """Instance task: the instance ids ``(*spatial)`` (0 background and unannotated), numbered
    ``1..N``; what the post-processing is tuned against and what resampling starts from."""

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.target.shape)


def prepare_pair(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    ndim: int = 2,
    task: str = "instance",
    region: np.ndarray | None = None,
    ignore_label: int | None = None,
    normalization: dict | None = None,
    num_classes: int | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    contact: bool = True,
    name: str = "",
) -> TrainingPair:
    """Check one (image, labels) pair and turn it into a :class:`TrainingPair`.

    Parameters
    ----------
    image : ndarray, shape (*spatial) or (C, *spatial) or (*spatial, C)
        Raw image; a channel axis is recognised as the one axis the labels do not have.
    labels : ndarray of int, shape (*spatial)
        Instance ids (task "instance") or class ids (task "semantic"); 0 is background.
    ndim : {2, 3}
        Spatial dimensions.
    region : ndarray of bool, shape (*spatial), optional
        True where the labels are valid (sparse annotation).
    ignore_label : int, optional
        A label value that marks unannotated pixels.
    w0, sigma, contact
        Border weighting of the instance task (see :func:`~.targets.unet_weight_map`).
    """
    image, labels = np.asarray(image), np.asarray(labels)
    where = f" ({name})" if name else ""
    check_not_empty(image.shape, f"image{where}")
    if labels.ndim != ndim:
        raise ShapeError(f"labels{where} must have {ndim} spatial axes, got shape {labels.shape}")
    image = _channel_first(image, labels.shape, where)
    if image.dtype.kind not in "biuf":
        raise UserInputError(f"image{where} must hold numbers, got dtype {image.dtype}")
    check_finite(image, f"image{where}")
    valid = np.ones(labels.shape, bool)
    if region is not None:
        region = np.asarray(region)
        if region.shape != labels.shape:
            raise ShapeError(
                f"region mask{where} has shape {region.shape}, labels have {labels.shape}"
            )
        valid &= region.astype(bool)
    if ignore_label is not None:
        valid &= labels != ignore_label
        labels = np.where(labels == ignore_label, 0, labels)
    labels = check_labels(labels, f"labels{where}")  # after the ignore label (it may be -1)
    # not an intensity image given as labels (judged where annotated: the rest is ignored)
    check_looks_like_labels(np.where(valid, labels, 0), f"labels{where}", TRAINING_FLATNESS)
    if not valid.any():
        raise UserInputError(
            f"pair{where} has no annotated pixel (region mask / ignore label cover everything)"
        )
    norm = normalize(image, normalization, channel_axis=0)
    if task == "instance":
        from skimage.segmentation import relabel_sequential

        labels = relabel_sequential(labels.astype(np.int64))[0]
        target = instance_to_classes(labels, valid)
        weight = unet_weight_map(labels, w0=w0, sigma=sigma, valid=valid, contact=contact)
        labels = np.where(valid, labels, 0).astype(np.int32)
        diameters = object_diameters(labels)
    elif task == "semantic":
        labels = np.where(valid, labels, 0)  # unannotated class ids are unknown, not classes
        if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
            raise UserInputError(
                f"semantic labels{where} must be class ids in [0, {num_classes}), got range "
                f"[{labels.min()}, {labels.max()}]"
            )
        target = labels.astype(np.uint8 if labels.max() < 256 else np.int64)
        weight = np.ones(labels.shape, np.float32)
        diameters = np.empty(0, np.float32)
        labels = None
    else:
        raise UserInputError(f"task must be 'instance' or 'semantic', got {task!r}")
    return TrainingPair(norm, target, weight, valid, name, diameters, labels)


def object_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameter of each object: of the disc (2D) or ball (3D) of the same size.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
        Instance labels numbered ``1..N`` (0 = background).

    Returns
    -------
    ndarray of float32, shape (N_present,)
    """
    sizes = np.bincount(labels.ravel())[1:]
    return equivalent_diameters(sizes[sizes > 0], labels.ndim).astype(np.float32)


def _channel_first(image: np.ndarray, spatial: tuple[int, ...], where: str) -> np.ndarray:
    if image.shape == spatial:
        return image[None]
    if image.ndim == len(spatial) + 1:
        if image.shape[1:] == spatial:
            return image
        if image.shape[:-1] == spatial:
            return np.moveaxis(image, -1, 0)
    raise ShapeError(
        f"image{where} of shape {image.shape} does not match labels of shape {spatial}; "
        "the image must have the labels' shape, plus at most one channel axis"
    )


def match_folder_pairs(images_dir: str | Path, labels_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair the image files of two folders by file name (a ``_labels`` suffix is accepted)."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for arg, d in (("images", images_dir), ("labels", labels_dir)):
        if not d.is_dir():
            what = "is a file, not a folder" if d.exists() else "not found"
            raise UserInputError(f"--{arg} folder {what}: {d}")
    labels = {}
    for p in _images_in(labels_dir, "--labels"):
        stem = image_name(p)
        labels[stem[: -len("_labels")] if stem.endswith("_labels") else stem] = p
    images = _images_in(images_dir, "--images")
    pairs = [(p, labels[image_name(p)]) for p in images if image_name(p) in labels]
    if not pairs:
        raise UserInputError(
            f"no image in {images_dir} has a labels file of the same name in {labels_dir}"
        )
    unmatched = len(images) - len(pairs)
    if unmatched:
        log.warning("%d image(s) in %s have no labels file and are skipped", unmatched, images_dir)
    return pairs


def _images_in(folder: Path, arg: str) -> list[Path]:
    try:
        return _list_images(folder, f"{arg} folder")
    except UserInputError:
        return []  # an empty folder: reported as "no image ... has a labels file"


def read_folder_pairs(
    images_dir: str | Path, labels_dir: str | Path
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Read matched (image, labels, name) triples from two folders of images.

    Every file goes through the checked reader (:func:`~napari_unet.common.readers.read_image`):
    a corrupt or empty file is a :class:`UserInputError` naming it.
    """
    triples = []
    for i, lab in match_folder_pairs(images_dir, labels_dir):
        image = np.asarray(read_image(i, lazy=False)[0])
        labels = as_label_array(np.asarray(read_image(lab, lazy=False)[0]))
        triples.append((image, labels, image_name(i)))
    return triples


def fingerprint(pairs: Sequence[TrainingPair]) -> str:
    """A short SHA-256 of the training data (targets and raw shapes), for provenance."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(p.name.encode())
        h.update(str(p.image.shape).encode())
        h.update(np.ascontiguousarray(p.target).tobytes())
        h.update(np.ascontiguousarray(p.valid).tobytes())
    return h.hexdigest()[:16]


class PatchSampler:
    """Random patches of a fixed shape from a list of pairs, reproducible from a generator.

    Parameters
    ----------
    pairs : list of TrainingPair
    patch_shape : tuple of int
        Spatial patch shape; every image must be at least this large.
    foreground_fraction : float
        Probability that a patch is centred on a random foreground pixel (balances sparse
        objects against background); otherwise the patch position is uniform.
    """

    def __init__(
        self,
        pairs: Sequence[TrainingPair],
        patch_shape: tuple[int, ...],
        foreground_fraction: float = 0.5,
    ):
        if not pairs:
            raise UserInputError("no training pairs given")
        self.pairs = [_check_fits(p, patch_shape) for p in pairs]
        if not any((p.target > 0)[p.valid].any() for p in self.pairs):
            raise UserInputError(
                "the labels of every training pair are background only: annotate at least one object"
            )
        self.patch_shape = tuple(patch_shape)
        self.foreground_fraction = foreground_fraction
        sizes = np.array([p.valid.sum() for p in self.pairs], float)
        self._p = sizes / sizes.sum()

    def sample(
        self, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One patch: image (C, *patch), target, weight, valid (each *patch)."""
        pair = self.pairs[int(rng.choice(len(self.pairs), p=self._p))]
        shape = pair.spatial_shape
        if rng.random() < self.foreground_fraction:
            fg = np.flatnonzero((pair.target > 0) & pair.valid)
        else:
            fg = np.empty(0, np.int64)
        if fg.size:
            centre = np.unravel_index(int(fg[rng.integers(fg.size)]), shape)
            start = [
                int(np.clip(c - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, n - p))
                for c, p, n in zip(centre, self.patch_shape, shape)
            ]
        else:
            start = [int(rng.integers(n - p + 1)) for p, n in zip(self.patch_shape, shape)]
        sl = tuple(slice(s, s + p) for s, p in zip(start, self.patch_shape))
        return pair.image[(slice(None), *sl)], pair.target[sl], pair.weight[sl], pair.valid[sl]


def _check_fits(pair: TrainingPair, patch_shape: tuple[int, ...]) -> TrainingPair:
    if any(n < p for p, n in zip(patch_shape, pair.spatial_shape)):
        raise ShapeError(
            f"image {pair.name or ''} of shape {pair.spatial_shape} is smaller than the patch "
            f"shape {tuple(patch_shape)}; choose a smaller patch size (--patch) that the "
            "network accepts"
        )
    return pair
