"""The model card a training run writes: task, classes, input, normalisation, provenance, metrics.

:func:`training_card` is called once, at the end of :func:`napari_unet.training.loop.train_iter`,
with the run's state; the card travels with the weights into the model file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...model.files import DEFAULT_NORMALIZATION, INSTANCE_CLASSES, library_versions
from ...model.unet import UNet
from ..checkpoint import RunState
from ..config import TrainConfig
from ..data.pairs import fingerprint

__all__ = ["describe_origin", "training_card"]


def describe_origin(model: UNet) -> dict[str, Any]:
    """Where a fine-tuned model started: the name and data fingerprint of the initial model."""
    card = getattr(model, "card", {}) or {}
    return {
        "name": card.get("name"),
        "data_fingerprint": (card.get("provenance") or {}).get("data_fingerprint"),
    }


def training_card(
    model: UNet,
    state: RunState,
    config: TrainConfig,
    pairs,
    initialized_from: dict[str, Any] | None = None,
    tuned: Any = None,
    working_size: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``model.card`` updated with what this run did.

    Parameters
    ----------
    model : UNet
        The trained model (its existing card entries, e.g. a name, are kept).
    state : RunState
        The run's history and best epoch (0-based, as in the history; ``-1``: none).
    config : TrainConfig
    pairs : list of TrainingPair
        The training pairs (fingerprinted; their objects' median diameter is recorded as
        ``object_diameter`` for instance models).
    initialized_from : dict, optional
        :func:`describe_origin` of the model training started from.
    tuned : TunedPostprocessing, optional
        The post-processing chosen on the validation images (:mod:`.tune`): written as the
        ``postprocessing`` entry, its scores as ``metrics.val_ap50`` and ``metrics.val_mean_ap``.
    working_size : dict, optional
        :meth:`~napari_unet.training.data.working_size.WorkingSize.card_entry`: the images were
        resampled to this object size, which becomes ``object_diameter``; recorded in
        ``provenance.working_size``.

    Returns
    -------
    dict
    """
    last = state.history[-1] if state.history else {}
    card = {
        **model.card,
        "task": config.task,
        "class_names": list(config.class_names or _default_class_names(config, model.num_classes)),
        "input": {"axes": "ZYX" if config.ndim == 3 else "YX", "channels": model.in_channels},
        "normalization": dict(config.normalization or DEFAULT_NORMALIZATION),
        "provenance": {
            "data_fingerprint": fingerprint(pairs),
            "n_training_images": len(pairs),
            "seed": config.seed,
            "training": config.to_dict(),
            "epochs_trained": len(state.history),
            "library_versions": library_versions(),
            **({"initialized_from": initialized_from} if initialized_from else {}),
        },
        "metrics": {
            "val_dice": state.best_dice if state.best_epoch >= 0 else None,
            # counted from 1, as the progress lines and epochs_trained count epochs
            "best_epoch": state.best_epoch + 1 if state.best_epoch >= 0 else None,
            "final_train_loss": last.get("train_loss"),
            "final_val_loss": last.get("val_loss"),
        },
    }
    if tuned is not None:
        card["postprocessing"] = tuned.card_entry()
        card["metrics"]["val_ap50"] = round(tuned.ap50, 4)
        card["metrics"]["val_mean_ap"] = round(tuned.mean_ap, 4)
    diameters = np.concatenate([p.diameters for p in pairs]) if pairs else np.empty(0)
    if config.task == "instance" and diameters.size:
        card["object_diameter"] = round(float(np.median(diameters)), 1)
    if working_size is not None:
        card["object_diameter"] = working_size["object_diameter"]
        card["provenance"]["working_size"] = working_size
    return card


def _default_class_names(config: TrainConfig, n: int) -> list[str]:
    if config.task == "instance":
        return list(INSTANCE_CLASSES)
    return ["background"] + [f"class {i}" for i in range(1, n)]
