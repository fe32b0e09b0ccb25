"""Reaching a dask.distributed cluster and checking that it can run a segmentation.

A scheduler is named by its address (``tcp://host:8786``), given as ``--scheduler``, as the
``DASK_SCHEDULER_ADDRESS`` environment variable, or as ``segment(..., client=...)`` (a
``distributed.Client`` or an address). Before any work is sent, the workers are checked: at
least one is connected, each imports napari-unet (warning when its version differs), and each
sees the folder the results are written to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._version import __version__
from ..common.errors import UserInputError

__all__ = [
    "ENV_VAR",
    "check_shared",
    "check_workers",
    "cluster_client",
    "scheduler_address",
    "torch_engine",
]

log = logging.getLogger(__name__)

#: the environment variable read when no scheduler address is given (as dask's own config)
ENV_VAR = "DASK_SCHEDULER_ADDRESS"
#: seconds to wait for the scheduler to answer, and for a first worker to join it
CONNECT_TIMEOUT = 10.0

_PROBE = "__import__('napari_unet.model.unet').__version__"


def scheduler_address(address: str | None = None) -> str | None:
    """``address``, else ``$DASK_SCHEDULER_ADDRESS``, else None (compute in this process)."""
    return (address or "").strip() or os.environ.get(ENV_VAR, "").strip() or None


@contextlib.contextmanager
def cluster_client(client: Any) -> Iterator[Any]:
    """A checked ``distributed.Client``: ``client`` itself, or a new one for an address.

    A client made here from an address is closed on exit; a given client is left open.

    Raises
    ------
    UserInputError
        ``distributed`` is not installed, the scheduler cannot be reached, or it has no
        worker that can run napari-unet.
    """
    if not isinstance(client, str):
        check_workers(client)
        yield client
        return
    try:
        from distributed import Client
    except ImportError as err:
        raise UserInputError(
            "segmenting on a cluster needs the 'distributed' package: pip install distributed"
        ) from err
    try:
        own = Client(client, timeout=f"{CONNECT_TIMEOUT}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise UserInputError(
            f"cannot reach the dask scheduler at {client!r} ({err}); check the address "
            "(tcp://HOST:8786) or start one with `dask scheduler` and workers with "
            f"`dask worker {client}`"
        ) from err
    try:
        check_workers(own)
        yield own
    finally:
        own.close()


def check_workers(client: Any) -> dict[str, str]:
    """The napari-unet version on each worker; raises if there is none or one lacks it."""
    address = getattr(client.scheduler, "address", "the scheduler")
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except (TimeoutError, OSError) as err:
        raise UserInputError(
            f"the dask scheduler at {address} has no workers; start some with "
            f"`dask worker {address}` on machines that have napari-unet installed"
        ) from err
    answers = client.run(eval, _PROBE, on_error="return")
    missing = {w: a for w, a in answers.items() if not isinstance(a, str)}
    if missing:
        worker, error = next(iter(missing.items()))
        raise UserInputError(
            f"{len(missing)} of {len(answers)} dask workers cannot import napari-unet "
            f"(e.g. {worker}: {type(error).__name__}: {error}); install napari-unet=={__version__}"
            " (with torch) in the workers' Python environment"
        )
    other = sorted({v for v in answers.values() if v != __version__})
    if other:
        log.warning("dask workers run napari-unet %s, this process %s", other, __version__)
    return answers


def check_shared(client: Any, folder: str | os.PathLike) -> None:
    """Raise unless every worker sees ``folder`` (a marker file written here is found there)."""
    folder = Path(folder).resolve()
    marker = folder / f".napari-unet-shared-{uuid.uuid4().hex}"
    try:
        marker.write_bytes(b"")
    except OSError as err:
        raise UserInputError(f"cannot write into the output folder {folder}: {err}") from err
    try:
        seen = client.run(os.path.exists, str(marker), on_error="return")
    finally:
        marker.unlink(missing_ok=True)
    blind = sorted(w for w, ok in seen.items() if ok is not True)
    if blind:
        raise UserInputError(
            f"the output folder {folder} is not visible from {len(blind)} of {len(seen)} dask "
            f"workers (e.g. {blind[0]}): write the output (and keep the input) on storage every "
            "worker reaches, under the same path (a shared or network file system)"
        )


def torch_engine(engine: str | None) -> str:
    """The engine on a cluster: torch (``"auto"`` means torch there); others are an error."""
    if (engine or "auto").lower() in ("auto", "torch"):
        return "torch"
    raise UserInputError(
        f"engine {engine!r} does not run on a dask cluster: the workers run the network with "
        "torch; use engine 'auto' or 'torch' (--engine torch) with a scheduler"
    )
