"""Data-parallel training with ``torch.distributed``: one process per device, launched by torchrun.

``torchrun --nproc-per-node N -m napari_unet train ...`` (or ``napari-unet train --nproc N``)
starts N copies of the training; :meth:`Ranks.from_environment` joins them into one process
group (gloo on the CPU, nccl on CUDA, one GPU per process). The run is the single-process run
split N ways:

* batch ``step`` of epoch ``epoch`` is still drawn whole from its own seeded generator
  (:mod:`.batches`); rank ``r`` keeps samples ``r*B/N .. (r+1)*B/N - 1`` of it, so the global
  batch is the same whatever N;
* the network is wrapped in ``DistributedDataParallel`` (which averages the gradients) and
  the loss's sums over the batch are summed over the ranks (:meth:`Ranks.total`), so the
  gradient is that of the single-process loss over the global batch, up to reduction order;
* only rank 0 validates (the others receive its scores), writes checkpoints and the model,
  and logs; a stop request on any rank stops all ranks after the same batch.

Batch-norm statistics are per rank on the CPU (``SyncBatchNorm`` needs CUDA); on CUDA they are
synchronised, so a model with batch norm also trains as in one process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..common.errors import UserInputError

__all__ = ["Ranks", "launched_by_torchrun"]

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run (a lone process: ``world_size == 1``)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, logs and writes files."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> Ranks:
        """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ...), if any."""
        if not launched_by_torchrun():
            return cls()
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_world_size(), dist.get_rank(), local_rank)

    # -- set-up ----------------------------------------------------------------------------
    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (``cuda:LOCAL_RANK``) on CUDA."""
        if self.world_size > 1 and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training steps call: ``model`` itself, or its DDP wrapper."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        cuda = next(model.parameters()).device.type == "cuda"
        if cuda:  # in place: the parameters and buffers stay model's own
            _sync_batch_norm(model)
        return DistributedDataParallel(model, device_ids=[self.local_rank] if cuda else None)

    def share(self, batch_size: int) -> slice | None:
        """The samples of each global batch this rank trains on (None: all of them)."""
        if self.world_size == 1:
            return None
        if batch_size % self.world_size:
            raise UserInputError(
                f"the batch size ({batch_size}) must be a multiple of the number of training "
                f"processes ({self.world_size}): each trains on an equal share of every batch"
            )
        size = batch_size // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    # -- during training -------------------------------------------------------------------
    @property
    def total(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """A loss's batch sums made global (None for a lone process); see :meth:`_total`."""
        return None if self.world_size == 1 else self._total

    def _total(self, local: torch.Tensor) -> torch.Tensor:
        """``local`` summed over the ranks, with the gradient of this rank's own part.

        DDP averages the ranks' gradients, so a loss built on these sums, multiplied by the
        world size (:meth:`backward`), has the gradient of the loss over the global batch.
        """
        import torch.distributed as dist

        summed = local.detach().clone()
        dist.all_reduce(summed)
        return local + (summed - local.detach())

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate a loss built on :meth:`total` sums (DDP averages the gradients)."""
        (loss * self.world_size if self.world_size > 1 else loss).backward()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (so that all ranks stop after the same batch)."""
        if self.world_size == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([float(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def on_main(self, compute: Callable[[], tuple[float, ...]], size: int) -> tuple[float, ...]:
        """``compute()`` on rank 0 only; every rank gets its ``size`` numbers."""
        if self.world_size == 1:
            return compute()
        import torch.distributed as dist

        values = torch.tensor(compute() if self.is_main else (0.0,) * size, dtype=torch.float64)
        dist.broadcast(values, src=0)
        return tuple(float(v) for v in values)

    def record(self, result: Any) -> Any:
        """Write the world size into the trained model's card (``provenance.world_size``)."""
        result.model.card.setdefault("provenance", {})["world_size"] = self.world_size
        return result

    def wait_for_main(self) -> None:
        """All ranks wait here until rank 0 arrives (after its end-of-run tuning and fitting).

        A rank that left the process group while rank 0 was still working made its gloo
        threads abort (SIGABRT), and torchrun then reported the whole run as failed.
        """
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def unwrap(self, model: torch.nn.Module) -> None:
        """Undo :meth:`wrap`'s in-place changes (synchronised batch norm) at the end."""
        _plain_batch_norm(model)

    def close(self) -> None:
        """Leave the process group (the end of the run)."""
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


_BN = {2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}


def _sync_batch_norm(model: torch.nn.Module) -> None:
    """Replace the batch norms inside ``model`` by ``SyncBatchNorm`` sharing their tensors."""
    for name, child in model.named_children():
        if isinstance(child, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(child)
            synced.napari_unet_ndim = 3 if isinstance(child, torch.nn.BatchNorm3d) else 2
            setattr(model, name, synced)
        else:
            _sync_batch_norm(child)


def _plain_batch_norm(model: torch.nn.Module) -> None:
    """The reverse of :func:`_sync_batch_norm`."""
    for name, child in model.named_children():
        if isinstance(child, torch.nn.SyncBatchNorm):
            plain = _BN[getattr(child, "napari_unet_ndim", 2)](
                child.num_features, child.eps, child.momentum, child.affine
            )
            plain.load_state_dict(child.state_dict())
            plain.to(next(iter(child.state_dict().values())).device)
            setattr(model, name, plain)
        else:
            _plain_batch_norm(child)
