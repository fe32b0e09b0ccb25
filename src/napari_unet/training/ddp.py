"""Data-parallel training with ``torch.distributed``: one process per device, launched by torchrun.

``torchrun --nproc-per-node N -m napari_unet train ...`` (or ``napari-unet train --nproc N``)
starts N copies of the training; :meth:`Ranks.from_environment` joins them into one process
group (gloo on the CPU, nccl on CUDA, one GPU per process). The run is the single-process run
split N ways:

* batch ``step`` of epoch ``epoch`` is still drawn whole from its own seeded generator
  (:mod:`.data.batches`); rank ``r`` keeps samples ``r*B/N .. (r+1)*B/N - 1`` of it, so the global
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

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..common.cores import usable_cores
from ..common.errors import UserInputError

__all__ = ["Ranks", "check_world", "launched_by_torchrun", "process_limit", "torchrun"]

log = logging.getLogger(__name__)

#: most training processes launched on one machine, whatever its core count
MAX_PROCESSES = 64


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def torchrun(argv: list[str]) -> int:
    """``torchrun ARGV`` in this process; the exit code of the first rank that failed.

    The ranks speak for themselves (rank 0 says what went wrong, in one line): torchrun's own
    warnings, its OMP_NUM_THREADS banner (the same default of 1 is set here) and the
    traceback of its ``ChildFailedError`` are left out. A rank killed by a signal gives
    ``128 + signal``, as a shell reports it.

    The ranks run in sessions of their own, so a Ctrl-C in the terminal reaches this process
    only. torchrun would shut the ranks down on it (SIGINT, then SIGKILL 30 s later, while
    they may still be finishing) and leave them running on a second one; here each Ctrl-C is
    passed on to the ranks, which stop after the batch, finish and save (a second Ctrl-C
    aborts them), and torchrun ends when they do. Other signals (SIGTERM) are torchrun's to
    pass on, and end this process quietly with ``128 + signal``.
    """
    import logging
    import signal

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    before = os.environ.get("LOGLEVEL")
    os.environ["LOGLEVEL"] = "CRITICAL"  # read once, when torch's elastic loggers are made
    try:
        from torch.distributed.elastic.multiprocessing import api
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import main
    finally:
        if before is None:
            os.environ.pop("LOGLEVEL")
        else:
            os.environ["LOGLEVEL"] = before
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    terminate = getattr(api, "_terminate_process_handler", None)
    if terminate is not None:  # installed by torchrun when it starts the ranks

        def pass_ctrl_c_on(signum, frame):
            ranks = _child_processes() if signum == signal.SIGINT else None
            if ranks is None:
                terminate(signum, frame)
                return
            for pid in ranks:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGINT)

        api._terminate_process_handler = pass_ctrl_c_on
    try:
        main(argv)
    except ChildFailedError as err:
        code = err.get_first_failure()[1].exitcode
        return 128 - code if code < 0 else code
    except api.SignalException as err:
        return 128 + int(err.sigval)
    return 0


def is_peer_lost(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another rank went away."""
    if isinstance(err, torch.distributed.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "gloo" in text or "Connection closed by peer" in text or "Connection reset" in text
    )


def _child_processes() -> list[int] | None:
    """The ids of this process's children (the ranks), or None where they cannot be listed."""
    try:
        import psutil
    except ImportError:
        pids = []
        try:  # Linux
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as fh:
                    pids += [int(pid) for pid in fh.read().split()]
        except OSError:
            return None
        return pids
    return [child.pid for child in psutil.Process().children()]


def process_limit(device: torch.device) -> tuple[int, str]:
    """The most training processes this machine runs on ``device``, and what bounds it.

    One process per GPU on CUDA; on the CPU one per core this process may use (its
    affinity), at most :data:`MAX_PROCESSES`.
    """
    if device.type == "cuda":
        return torch.cuda.device_count(), "GPUs"
    cores = usable_cores()
    if cores > MAX_PROCESSES:
        return MAX_PROCESSES, "processes napari-unet launches on one machine"
    return cores, "CPU cores"


def check_world(world_size: int, batch_size: int, device: torch.device) -> None:
    """Refuse a data-parallel run that cannot work, before any process starts.

    Raises
    ------
    UserInputError
        The batch does not split evenly over the processes, there are more processes than
        :func:`process_limit` allows, or the device cannot be shared by processes (MPS).
    """
    if world_size <= 1:
        return
    if device.type not in ("cpu", "cuda"):
        raise UserInputError(
            f"--nproc {world_size} trains on the CPU or on CUDA GPUs, not on {device.type}: "
            "pass --device cpu (or drop --nproc)"
        )
    # the process limit first: a batch advice for a --nproc that cannot run would mislead
    limit, what = process_limit(device)
    if world_size > limit:
        per = "one process per GPU" if device.type == "cuda" else "one process per CPU core"
        raise UserInputError(
            f"--nproc {world_size} is more than this machine's {limit} {what} ({per} at "
            f"most): pass --nproc {limit} or fewer"
            + ("" if limit else "; no CUDA GPU is visible, train on the CPU with --device cpu")
        )
    if batch_size % world_size:
        up = -(-batch_size // world_size) * world_size
        down = batch_size // world_size * world_size
        choices = f"--batch {down} or {up}" if down else f"--batch {up}"
        raise UserInputError(
            f"--batch {batch_size} is not a multiple of --nproc {world_size}: each process "
            f"trains on an equal share of every batch ({choices})"
        )


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
