"""Choice of the compute device."""

from __future__ import annotations

import torch

from .errors import UserInputError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """A :class:`torch.device` from ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    ``"auto"`` (or ``None``) picks CUDA, then Apple MPS, then the CPU.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES[1:]:
        raise UserInputError(f"device must be one of {DEVICES} (or 'cuda:N'), got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            "device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(
            "device 'mps' was asked for but Apple MPS is not available; use 'auto' or 'cpu'"
        )
    return torch.device(name)
