"""The validated, versioned settings of a training run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..common.errors import UserInputError
from ..common.validate import check_integer, check_number
from ..model.files import DEFAULT_NORMALIZATION
from .augment import AugmentConfig

TASKS = ("instance", "semantic")
#: what :attr:`TrainConfig.train_layers` may be
TRAIN_LAYERS = ("all", "decoder")


#: default peak learning rate of a fine-tune (a model to start from, no rate given): at 1e-3,
#: 8 steps on one large-nuclei image took the built-in model from AP@0.5 0.765 to 0.509 on 8
#: others of that kind; at 1e-4: 0.754
FINE_TUNE_LR = 1e-4


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run; every field is checked on construction.

    The defaults suit 2D fluorescence nuclei on a CPU: a base-16, depth-4 U-Net on 128x128
    patches, batch 8, AdamW at 1e-3 with warm-up and cosine decay.
    """

    task: str = "instance"
    num_classes: int | None = None
    """Semantic task only: number of classes; by default the largest label + 1."""
    class_names: tuple[str, ...] | None = None
    ndim: int = 2
    depth: int = 4
    base_filters: int = 16
    batch_norm: bool = True
    epochs: int = 20
    steps_per_epoch: int | None = None
    batch_size: int = 8
    patch_size: int | tuple[int, ...] = 128
    learning_rate: float = 1e-3
    """Peak learning rate; :func:`~napari_unet.training.arrays.train` and ``train --init`` use
    :data:`FINE_TUNE_LR` when they fine-tune a model and no rate is given."""
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    dice_weight: float = 1.0
    val_fraction: float = 0.1
    val_crop_size: int = 512
    foreground_fraction: float = 0.5
    w0: float = 10.0
    sigma: float = 5.0
    contact_weight: bool = True
    """Apply the ``w0`` border weight also to the rims where objects touch (instance task)."""
    normalization: dict = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"
    tune_postprocessing: bool = True
    """Instance task: choose the post-processing on the validation images after training."""
    freeze_norm_statistics: bool | None = None
    """Keep the batch-norm running statistics of the model being fine-tuned (its normalising
    layers still learn their scale and shift). None: frozen when fine-tuning a model, updated
    when training a new one: the few images of a fine-tune, a handful of patches per batch,
    would otherwise replace statistics gathered over the parent's whole training set."""
    hold_back: float = 0.25
    """With fewer than :data:`~.validation.STRIPS_BELOW` images (one: none to hold back),
    this share of each image's longest side (its end) is held back for validation instead:
    the post-processing is chosen there and a fine-tune is compared with its parent there,
    on pixels it did not train on. 0: validate on the training images themselves."""
    train_layers: str = "all"
    """Which weights learn: ``"all"``, or ``"decoder"`` (the encoder and the bottleneck of
    the model being fine-tuned stay as they are, and no gradient flows through them: a
    one-image fine-tune learns the new images' appearance in the decoder in a third of the
    time, without forgetting the features learnt from many; issue 26)."""
    object_diameter: float | str | None = "auto"
    """Instance task: the object size (equivalent diameter, pixels) the network works at; each
    image is resampled so its objects' median matches it (:mod:`.data.working_size`). ``"auto"``:
    the fine-tuned model's size, else the training objects' median; None: no resampling."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UserInputError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.ndim not in (2, 3):
            raise UserInputError(f"ndim must be 2 or 3, got {self.ndim!r}")
        for name in ("epochs", "batch_size", "base_filters"):
            check_integer(getattr(self, name), name, minimum=1)
        check_integer(self.depth, "depth", minimum=0, maximum=8)
        check_integer(self.steps_per_epoch, "steps_per_epoch", minimum=1, none_ok=True)
        check_integer(self.val_crop_size, "val_crop_size", minimum=1)
        check_integer(self.seed, "seed", minimum=0)
        positive = {"minimum": 0, "low_open": True}
        check_number(self.learning_rate, "learning_rate", **positive)
        check_number(self.weight_decay, "weight_decay", minimum=0)
        check_number(self.grad_clip, "grad_clip", **positive)
        check_number(self.dice_weight, "dice_weight", minimum=0)
        check_number(self.w0, "w0 (border weight)", minimum=0)
        check_number(self.sigma, "sigma (border width)", **positive)
        check_number(self.val_fraction, "val_fraction", minimum=0, maximum=1, high_open=True)
        check_number(self.foreground_fraction, "foreground_fraction", minimum=0, maximum=1)
        check_number(self.hold_back, "hold_back", minimum=0, maximum=0.5)
        if self.train_layers not in TRAIN_LAYERS:
            raise UserInputError(
                f"train_layers must be one of {TRAIN_LAYERS}, got {self.train_layers!r}"
            )
        if self.num_classes is not None:
            check_integer(self.num_classes, "num_classes", minimum=2)
        sizes = self.patch_size if isinstance(self.patch_size, tuple | list) else [self.patch_size]
        for size in sizes:
            check_integer(size, "patch_size", minimum=1)
        shape = self.patch_shape()
        if len(shape) != self.ndim or min(shape) < 1:
            raise UserInputError(
                f"patch_size must be one positive size or {self.ndim} sizes, got {self.patch_size!r}"
            )
        frozen = self.freeze_norm_statistics
        if not (frozen is None or isinstance(frozen, bool)):
            raise UserInputError(
                "freeze_norm_statistics must be None (frozen when fine-tuning), True or False, "
                f"got {frozen!r}"
            )
        d = self.object_diameter
        if not (d is None or d == "auto" or _positive_number(d)):
            raise UserInputError(
                f"object_diameter must be 'auto', None or a positive number of pixels, got {d!r}"
            )
        patch = self.patch_size
        smallest = min(patch) if isinstance(patch, tuple | list) else patch
        if _positive_number(d) and _positive_number(smallest) and d > smallest:
            raise UserInputError(
                f"object_diameter {d:g} px is larger than the training patch ({smallest} px): "
                "the network would never see a whole object; give the diameter the objects "
                "should have for the network (e.g. 20), or a larger patch"
            )
        if isinstance(self.augment, dict):
            aug = dict(self.augment)
            if "zoom" in aug:
                aug["zoom"] = tuple(aug["zoom"])
            object.__setattr__(self, "augment", AugmentConfig(**aug))
        if isinstance(self.patch_size, list):
            object.__setattr__(self, "patch_size", tuple(self.patch_size))
        if isinstance(self.class_names, list):
            object.__setattr__(self, "class_names", tuple(self.class_names))

    def patch_shape(self) -> tuple[int, ...]:
        if isinstance(self.patch_size, (int, np.integer)):
            return (int(self.patch_size),) * self.ndim
        return tuple(int(s) for s in self.patch_size)

    def resolved_num_classes(self, pairs) -> int:
        if self.task == "instance":
            return 3
        if self.num_classes is not None:
            return self.num_classes
        return max(2, max(int(p.target.max()) for p in pairs) + 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = asdict(self.augment)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserInputError(f"unknown training settings: {sorted(unknown)}")
        return cls(**data)


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def config_for_model(config: TrainConfig, model: Any) -> TrainConfig:
    """``config`` adjusted to fine-tune ``model``: its architecture and normalisation win.

    Fine-tuning keeps the network's layers, so ``ndim``, ``depth``, ``base_filters`` and
    ``batch_norm`` come from the model, and the images must be normalised as the model was
    trained. The task must match the model's.

    Parameters
    ----------
    config : TrainConfig
        The requested settings (learning rate, epochs, augmentation ... are kept).
    model : UNet
        The network to start from, e.g. ``load_model(None)`` for the built-in nuclei model.

    Returns
    -------
    TrainConfig
    """
    card = getattr(model, "card", {}) or {}
    task = card.get("task")
    if task is not None and task != config.task:
        raise UserInputError(
            f"the model to start from was trained for the {task!r} task, not {config.task!r}; "
            f"pass task={task!r} (--task {task}) or start from a {config.task} model"
        )
    arch = model.config
    if arch.padding != "same":
        raise UserInputError(
            "only 'same'-padded models can be fine-tuned; this one uses 'valid' padding"
        )
    return replace(
        config,
        ndim=arch.ndim,
        depth=arch.depth,
        base_filters=arch.base_filters,
        batch_norm=arch.batch_norm,
        num_classes=arch.num_classes if config.task == "semantic" else config.num_classes,
        normalization=dict(card.get("normalization") or config.normalization),
    )
