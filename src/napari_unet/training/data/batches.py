"""Training batches: random augmented patches, each batch drawn from its own seeded generator.

Batch ``step`` of epoch ``epoch`` is drawn with ``numpy.random.default_rng((seed, epoch,
step))``, so it is the same whichever process makes it and in whatever order: background
worker processes (``workers > 0``) can prepare batches while the GPU trains, and a resumed
run sees exactly the batches it would have seen, with no generator state to save.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from ...common.errors import UserInputError
from ..augment import augment
from ..config import TrainConfig
from .pairs import PatchSampler

__all__ = ["batches", "default_workers", "draw_batch"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def draw_batch(sampler: PatchSampler, config: TrainConfig, epoch: int, step: int) -> Batch:
    """Batch ``step`` of epoch ``epoch``, on the CPU.

    Returns
    -------
    image : float32 tensor (B, C, *patch)
    target : int64 tensor (B, *patch)
        Class ids.
    weight : float32 tensor (B, *patch)
        Per-pixel loss weights.
    valid : bool tensor (B, *patch)
        Annotated pixels.
    """
    rng = np.random.default_rng((config.seed, epoch, step))
    images, targets, weights, valids = [], [], [], []
    for _ in range(config.batch_size):
        img, tgt, w, v = sampler.sample(rng)
        img, (tgt, w, v) = augment(img, [tgt, w, v], rng, config.augment, orders=[0, 1, 0])
        images.append(img)
        targets.append(tgt)
        weights.append(w)
        valids.append(v)
    return (
        torch.from_numpy(np.stack(images).astype(np.float32, copy=False)),
        torch.from_numpy(np.stack(targets).astype(np.int64)),
        torch.from_numpy(np.stack(weights).astype(np.float32)),
        torch.from_numpy(np.stack(valids).astype(bool)),
    )


class _EpochBatches(torch.utils.data.Dataset):
    """Batches ``first .. steps - 1`` of one epoch, indexable from 0."""

    def __init__(self, sampler, config: TrainConfig, epoch: int, first: int, steps, share=None):
        self.sampler, self.config, self.epoch = sampler, config, epoch
        self.first, self.steps, self.share = first, steps, share

    def __len__(self) -> int:
        return self.steps - self.first

    def __getitem__(self, index: int) -> Batch:
        batch = draw_batch(self.sampler, self.config, self.epoch, self.first + index)
        return batch if self.share is None else tuple(t[self.share] for t in batch)


def batches(
    sampler: PatchSampler,
    config: TrainConfig,
    epoch: int,
    first: int,
    steps: int,
    device: torch.device,
    workers: int = 0,
    memory_format: torch.memory_format = torch.contiguous_format,
    share: slice | None = None,
) -> Iterator[Batch]:
    """The batches ``first .. steps - 1`` of ``epoch``, in order, moved to ``device``.

    With ``workers > 0`` that many background processes prepare the next batches while the
    current one trains; the batches are the same as with ``workers=0``. Closing the iterator
    (or dropping it) stops the workers. The images arrive in ``memory_format`` (the model's
    layout), converted in the same copy that moves them to ``device``. ``share``: the samples
    of each batch to keep (a data-parallel rank's part of the global batch,
    :mod:`napari_unet.training.ddp`).
    The workers start from a forkserver (a fresh interpreter), not by forking this process.
    """
    pin = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        _EpochBatches(sampler, config, epoch, first, steps, share),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
        # workers fork from a clean server process, never from this one: a process that has
        # started other runtimes' threads (OpenVINO, ONNX Runtime, Qt) can crash when forked
        multiprocessing_context="forkserver" if workers else None,
    )
    for image, *maps in loader:
        image = image.to(device, non_blocking=pin, memory_format=memory_format)
        yield (image, *(t.to(device, non_blocking=pin) for t in maps))  # type: ignore[misc]


def default_workers(device: torch.device, workers: int | str | None = "auto") -> int:
    """The number of batch-preparing processes for training on ``device``.

    ``"auto"`` (or None) is 0 on the CPU, whose cores train, and up to 8 (one core kept free)
    on a GPU, where one process cannot prepare batches as fast as the GPU consumes them.
    """
    if workers is None or workers == "auto":
        if device.type == "cpu":
            return 0
        return max(0, min(8, (os.cpu_count() or 1) - 1))
    try:
        n = int(workers)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or isinstance(workers, bool) or n != float(workers):
        raise UserInputError(f"workers must be 'auto' or a whole number >= 0, got {workers!r}")
    return n
