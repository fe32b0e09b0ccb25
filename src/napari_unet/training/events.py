"""The events a training run yields and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model.unet import UNet

__all__ = ["BatchEnd", "CheckpointSaved", "EpochEnd", "TrainResult"]


@dataclass(frozen=True)
class BatchEnd:
    """One optimisation step is done."""

    epoch: int
    step: int
    steps: int
    loss: float
    lr: float


@dataclass(frozen=True)
class EpochEnd:
    """An epoch is done and validated."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_dice: float
    best_dice: float
    is_best: bool
    seconds: float


@dataclass(frozen=True)
class CheckpointSaved:
    """A resume checkpoint was written."""

    path: str
    epoch: int
    step: int


@dataclass
class TrainResult:
    """What training returns: the best model, its history, and whether it was stopped."""

    model: UNet
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_dice: float = float("nan")
    stopped: bool = False
    postprocessing: Any = None
    """The :class:`~.finishing.tune.TunedPostprocessing` chosen on the validation images, or
    None."""
