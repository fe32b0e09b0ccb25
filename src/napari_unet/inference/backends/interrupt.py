"""Stopping a forward pass part-way: Cancel need not wait for a whole batch of tiles.

A batch of large tiles takes seconds on a CPU (one ~1040 px tile: ~1 s with OpenVINO int8 and
~5 s with torch on an idle 2-core machine, several times that under load). The engines' runners
take an optional ``stop`` event (a :class:`threading.Event`); when it is set during a batch the
runner abandons the batch and returns ``None``:

* torch: a forward pre-hook on every convolution checks the event, so the pass stops at the
  next layer;
* OpenVINO: the request runs asynchronously and is cancelled (``InferRequest.cancel``);
* ONNX Runtime: ``RunOptions.terminate`` is set from a watcher thread.

The work in flight is dropped, not finished: the caller must treat ``None`` as "cancelled".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

#: how often (seconds) a waiting runner looks at the stop event
POLL_S = 0.05

_CONVS = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


class _Stopped(Exception):
    """Raised inside a torch forward pass whose stop event was set."""


def torch_forward(
    net: torch.nn.Module, run: Callable[[], np.ndarray], stop: threading.Event | None
) -> np.ndarray | None:
    """``run()`` (a forward pass through ``net``), or ``None`` if ``stop`` is set during it.

    The hooks only act in the calling thread, so other threads using ``net`` are unaffected.
    """
    if stop is None:
        return run()
    owner = threading.get_ident()

    def check(_module: Any, _inputs: Any) -> None:
        if stop.is_set() and threading.get_ident() == owner:
            raise _Stopped

    handles = [m.register_forward_pre_hook(check) for m in net.modules() if isinstance(m, _CONVS)]
    try:
        return run()
    except _Stopped:
        return None
    finally:
        for handle in handles:
            handle.remove()


def openvino_infer(request: Any, inputs: dict, stop: threading.Event | None) -> np.ndarray | None:
    """The first output of an OpenVINO ``InferRequest``, or ``None`` if ``stop`` is set first."""
    if stop is None:
        return request.infer(inputs)[0].copy()
    if stop.is_set():
        return None
    request.start_async(inputs)
    while not request.wait_for(int(POLL_S * 1000)):
        if stop.is_set():
            request.cancel()
            try:
                request.wait()  # idle again before it is reused
            except RuntimeError as exc:  # "Infer Request was canceled": what we asked for
                log.debug("OpenVINO request cancelled: %s", exc)
            return None
    return request.get_output_tensor(0).data.copy()


def onnxruntime_run(session: Any, feeds: dict, stop: threading.Event | None) -> np.ndarray | None:
    """The first output of ``session.run``, or ``None`` if ``stop`` is set first."""
    if stop is None:
        return session.run(None, feeds)[0]
    if stop.is_set():
        return None
    import onnxruntime as ort

    options = ort.RunOptions()
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(POLL_S):
            if stop.is_set():
                options.terminate = True
                return

    watcher = threading.Thread(target=watch, name="napari-unet-stop", daemon=True)
    watcher.start()
    try:
        return session.run(None, feeds, options)[0]
    except Exception:  # ORT reports a terminated run as a generic runtime error
        if stop.is_set():
            return None
        raise
    finally:
        finished.set()
        watcher.join()
