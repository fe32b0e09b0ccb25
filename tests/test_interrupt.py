"""Stopping a forward pass part-way (Cancel in the Segment dock): every engine drops the batch
in flight when its stop event is set, and leaves results unchanged otherwise."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_unet.common.errors import Cancelled
from napari_unet.inference.backends import engines, interrupt
from napari_unet.inference.pipeline import segment_iter
from napari_unet.model.unet import UNet

CPU = torch.device("cpu")


def _net() -> UNet:
    torch.manual_seed(0)
    return UNet(1, 3, depth=2, base_filters=4).eval()


def test_torch_forward_stops_at_the_next_convolution():
    net = _net()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    ran: list[torch.nn.Module] = []
    stop = threading.Event()

    def count(module, _inputs):  # registered first: the stop is set as the 3rd conv starts
        ran.append(module)
        if len(ran) == 3:
            stop.set()

    for m in convs:
        m.register_forward_pre_hook(count)
    x = torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        assert interrupt.torch_forward(net, lambda: net(x), stop) is None
    assert len(ran) == 3 < len(convs)  # the rest of the network never ran
    ran.clear()
    with torch.no_grad():  # the hooks are gone: a later pass runs whole
        full = interrupt.torch_forward(net, lambda: net(x), threading.Event())
    assert full.shape == (1, 3, 64, 64) and len(ran) == len(convs)


@pytest.mark.parametrize("engine", ["torch", *engines.FAST])
def test_every_engine_drops_a_stopped_batch_and_is_unchanged_otherwise(engine):
    if engine != "torch":
        pytest.importorskip(engine)
    run = engines.engine_runner(_net(), engine, CPU)
    x = np.random.default_rng(0).normal(size=(2, 1, 64, 64)).astype(np.float32)
    stop = threading.Event()
    stop.set()
    assert run(x, stop) is None
    np.testing.assert_array_equal(run(x, threading.Event()), run(x))


class _FakeRequest:
    """An OpenVINO InferRequest that runs until it is cancelled."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop, self.polls, self.cancelled = stop, 0, False

    def start_async(self, inputs) -> None:
        pass

    def wait_for(self, ms: int) -> bool:
        self.polls += 1
        if self.polls == 2:
            self.stop.set()  # Cancel pressed while the request runs
        return False

    def cancel(self) -> None:
        self.cancelled = True

    def wait(self) -> None:
        raise RuntimeError("Infer Request was canceled")


def test_openvino_request_is_cancelled_while_it_runs():
    stop = threading.Event()
    request = _FakeRequest(stop)
    assert interrupt.openvino_infer(request, {0: None}, stop) is None
    assert request.cancelled and request.polls == 2


def test_onnxruntime_run_is_terminated_while_it_runs():
    pytest.importorskip("onnxruntime")
    stop = threading.Event()

    class Session:  # runs until ONNX Runtime's terminate flag is set
        def run(self, names, feeds, options):
            stop.set()  # Cancel pressed while the session runs
            while not options.terminate:
                threading.Event().wait(0.01)
            raise RuntimeError("Exiting due to terminate flag being set to true.")

    assert interrupt.onnxruntime_run(Session(), {}, stop) is None


def test_segment_iter_stopped_in_a_batch_yields_once_more_then_raises():
    image = np.random.default_rng(0).random((128, 128)).astype(np.float32)
    stop = threading.Event()
    gen = segment_iter(
        image, _net(), tile_shape=32, overlap=8, batch_size=2, engine="torch", stop=stop,
        diameter=None,
    )  # fmt: skip
    first = next(gen)
    assert first.stage == "predict" and first.done == 2
    stop.set()
    last = next(gen)  # the batch in flight was dropped: no tiles more
    assert last.stage == "predict" and last.done == first.done
    with pytest.raises(Cancelled):
        next(gen)
