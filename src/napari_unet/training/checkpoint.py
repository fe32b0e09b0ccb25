"""Training checkpoints: resume a stopped run exactly where it stopped.

A checkpoint holds the weights, the best weights so far, the optimizer and scheduler states, the
torch random-number state and the position (epoch, step, running loss); the training
batches need no saved state, since each is drawn from a generator seeded by its position
(:mod:`.data.batches`). It is written with
``torch.save`` and read with ``torch.load(weights_only=True)``, so loading never runs code.
It is separate from the exported model file.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..common.atomic import atomic_write
from ..common.errors import UserInputError, write_error
from .config import TrainConfig
from .data.pairs import fingerprint

CHECKPOINT_FORMAT = "napari-unet-checkpoint/2"
# /1 also saved a numpy generator state, no longer needed; such files still resume
READABLE_FORMATS = (CHECKPOINT_FORMAT, "napari-unet-checkpoint/1")


@dataclass
class RunState:
    """Where a training run stands: position, running loss, best model, history."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    best_dice: float = -1.0
    best_epoch: int = -1
    best_state: dict | None = None
    history: list = field(default_factory=list)


def save_checkpoint(path, model, optimizer, scheduler, state: RunState, config, pairs) -> None:
    """Write everything needed to continue training exactly, atomically (``torch.save``)."""
    document = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(config.to_dict()),
        "data_fingerprint": fingerprint(pairs),
        "model": model.state_dict(),
        "best_state": state.best_state or {},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "position": json.dumps(
            {
                k: getattr(state, k)
                for k in ("epoch", "step", "loss_sum", "loss_count", "best_dice", "best_epoch")
            }
        ),
        "history": json.dumps(state.history),
    }
    try:
        with atomic_write(path) as tmp:
            torch.save(document, tmp)
    except RuntimeError as err:  # torch reports a failed write (e.g. a full disk) this way
        raise write_error(err, path, "the checkpoint") from err


def read_checkpoint(path) -> dict:
    """The document of a checkpoint file, read without running code (``weights_only``).

    Raises
    ------
    UserInputError
        Missing, a folder, not a checkpoint, or a file that carries code (a pickle with
        objects other than tensors): one line, which never suggests loading it unsafely.
    """
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"checkpoint {path} is a folder; give the .ckpt file of the run")
    if not path.is_file():
        raise UserInputError(f"checkpoint to resume from not found: {path}")
    if path.suffix.lower() == ".safetensors":
        raise UserInputError(
            f"{path} is a model file, not a training checkpoint: resume from the .ckpt file of "
            "the run, or start from this model with --init (init=... in Python)"
        )
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:
            raise UserInputError(
                f"{path} is not a readable training checkpoint (not a file napari-unet train wrote)"
            ) from None
        raise UserInputError(
            f"{path} holds Python objects other than tensors ({found.group(1)}), which could run "
            "code: it was not loaded; resume only from a .ckpt file written by napari-unet train"
        ) from None
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise UserInputError(
            f"{path} is not a readable training checkpoint (truncated, or another kind of file)"
        ) from err
    if not isinstance(document, dict) or document.get("format") not in READABLE_FORMATS:
        raise UserInputError(f"{path} is not a napari-unet training checkpoint")
    return document


def settings_diff(saved: TrainConfig, now: TrainConfig, limit: int = 4) -> str:
    """The settings that differ, short: ``learning_rate 0.001, now 0.01; seed 0, now 1``."""
    a, b = saved.to_dict(), now.to_dict()
    skip = {"epochs", "device"}
    diffs = [
        f"{k} {_short(a[k])}, now {_short(b.get(k))}"
        for k in a
        if k not in skip and a[k] != b.get(k)
    ]
    more = f", and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def load_checkpoint(path, model, optimizer, scheduler, state: RunState, config, pairs) -> None:
    """Restore a :func:`save_checkpoint` file into the given objects (no unpickling)."""
    document = read_checkpoint(path)
    try:
        saved = TrainConfig.from_dict(json.loads(document["config"]))
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"{path} has corrupt training settings: {err}") from err
    if replace(saved, epochs=config.epochs, device=config.device) != config:
        raise UserInputError(
            f"{path} was written with different training settings ({settings_diff(saved, config)}); "
            "resume with the same settings (only --epochs may change)"
        )
    if document["data_fingerprint"] != fingerprint(pairs):
        raise UserInputError(
            f"{path} was written for different training data; resume with the same data"
        )
    model.load_state_dict(document["model"])
    optimizer.load_state_dict(document["optimizer"])
    scheduler.load_state_dict(document["scheduler"])
    torch.set_rng_state(document["rng_torch"])
    for key, value in json.loads(document["position"]).items():
        setattr(state, key, value)
    state.history = json.loads(document["history"])
    state.best_state = document["best_state"] or None
