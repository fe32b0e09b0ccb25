"""Reaching a dask.distributed cluster and checking that it can run a segmentation.

A scheduler is named by its address (``tcp://host:8786``), given as ``--scheduler``, as the
``DASK_SCHEDULER_ADDRESS`` environment variable, or as ``segment(..., client=...)`` (a
``distributed.Client`` or an address). An address is checked before a ``Client`` is made:
its form (:func:`check_address`), then that a dask scheduler answers there within
:data:`CONNECT_TIMEOUT` seconds, handshake included (:func:`probe_scheduler`); a port that
says nothing, answers something else or is not a scheduler's is refused in one line. Before
any work is sent, the workers are checked: at least one is connected, each imports
napari-unet (warning when its version differs), and each sees the folder the results are
written to.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..._version import __version__
from ...common.errors import UserInputError

__all__ = [
    "ENV_VAR",
    "check_address",
    "check_shared",
    "check_workers",
    "cluster_client",
    "probe_scheduler",
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
    if importlib.util.find_spec("distributed") is None:
        raise UserInputError(
            "segmenting on a cluster needs the 'distributed' package: pip install distributed"
        )
    check_address(client)
    probe_scheduler(client)
    try:
        own = _client_class()(client, timeout=f"{CONNECT_TIMEOUT}s", set_as_default=False)
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


def _named(address: str) -> str:
    """Where an address came from, for messages: the environment variable or the caller."""
    if os.environ.get(ENV_VAR, "").strip() == address:
        return f"{ENV_VAR}={address!r}"
    return f"the scheduler address {address!r}"


def check_address(address: str) -> str:
    """``address`` if it has the form of a dask address (``tcp://HOST:PORT``); else raise.

    Raises
    ------
    UserInputError
        A malformed address: no port, an unknown scheme, a port outside 1-65535.
    """
    from distributed.comm import registry
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address, strict=False)
        registry.get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            host, port = parse_host_port(location)
            if not host or not 0 < int(port) < 65536:
                raise ValueError(f"no host or a port outside 1-65535 in {location!r}")
    except (ValueError, TypeError) as err:
        raise UserInputError(
            f"{_named(address)} is not a dask scheduler address ({err}): give "
            "tcp://HOST:PORT, e.g. tcp://192.168.1.5:8786 (the port `dask scheduler` prints)"
        ) from None
    return address


def probe_scheduler(address: str, timeout: float | None = None) -> dict[str, Any]:
    """Ask ``address`` who it is; a dask scheduler's answer (``identity``), within ``timeout``.

    ``distributed`` bounds the connection by its timeout but not the handshake after it, and
    reads any bytes as its protocol: a port that accepts and says nothing would be waited on
    for ever, one that answers garbage may claim a message of exabytes. Here the whole
    exchange runs in its own thread and event loop (a caller's running loop, e.g. Jupyter's,
    is left alone) and is given up after ``timeout`` seconds.

    Raises
    ------
    UserInputError
        Nothing listens there, it does not answer in time, it answers something that is not
        the dask protocol, or it is a dask worker rather than the scheduler.
    """
    import asyncio
    import threading

    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    outcome: dict[str, Any] = {}

    async def identity() -> Any:
        from distributed.comm import connect
        from distributed.core import send_recv

        comm = await connect(address, timeout=timeout)
        try:
            return await send_recv(comm, op="identity")
        finally:
            comm.abort()

    def run() -> None:
        try:
            outcome["answer"] = asyncio.run(asyncio.wait_for(identity(), timeout))
        except BaseException as err:  # handed to the caller's thread below
            outcome["error"] = err

    thread = threading.Thread(target=run, name="napari-unet-probe-scheduler", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    error, answer = outcome.get("error"), outcome.get("answer")
    where = _named(address)
    if thread.is_alive() or isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        raise UserInputError(
            f"{where}: something accepted the connection but did not answer as a dask "
            f"scheduler within {timeout:g} s; check the address and port (a scheduler "
            "listens on 8786 by default) and that the scheduler is not stuck"
        )
    if isinstance(error, OSError):
        raise UserInputError(
            f"cannot reach the dask scheduler at {address!r} ({error}); check the address "
            "(tcp://HOST:8786) or start one with `dask scheduler` and workers with "
            f"`dask worker {address}`"
        )
    if error is not None or not isinstance(answer, dict):
        log.debug("answer of %s: %r", address, error if error is not None else answer)
        raise UserInputError(
            f"{where}: the program listening there does not speak the dask protocol (it "
            "answered bytes that are not dask messages); check the port (a scheduler listens "
            "on 8786 by default, 8787 is its dashboard)"
        )
    kind = answer.get("type")
    if kind != "Scheduler":
        raise UserInputError(
            f"{where} is a dask {kind or 'service'}, not the scheduler: give the scheduler's "
            "address (`dask scheduler` prints it; workers show it in their logs)"
        )
    return answer


def _client_class():
    """``distributed.Client``, except that a failed start is not waited for when collected.

    A ``Client`` whose constructor failed still closes itself in ``__del__``, which waits for
    twice its timeout (20 s) and prints a traceback while the program ends.
    """
    from distributed import Client

    class _CheckedClient(Client):
        _napari_unet_failed = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().__init__(*args, **kwargs)
            except BaseException:
                self._napari_unet_failed = True
                with contextlib.suppress(Exception):
                    self._loop_runner.stop()
                raise

        def __del__(self) -> None:
            if not self._napari_unet_failed:
                super().__del__()

    return _CheckedClient


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
