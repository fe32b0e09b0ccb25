"""Inference engines: OpenVINO and ONNX Runtime give torch's probabilities; export cache; auto."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from napari_unet import load_model, segment
from napari_unet.common.errors import UserInputError
from napari_unet.common.sample import load_sample
from napari_unet.inference.backends import engines
from napari_unet.inference.backends.engines import (
    AUTO_MIN_PIXELS,
    ENGINES,
    TOLERANCE,
    available_engines,
    cache_dir,
    engine_runner,
    is_prepared,
    resolve_engine,
)
from napari_unet.inference.tiling.predict import predict_tiled
from napari_unet.model.export import model_digest
from napari_unet.model.unet import UNet

CPU = torch.device("cpu")
FAST = list(engines.FAST)  # the engines equal to torch within TOLERANCE


def _net(ndim: int = 2, padding: str = "same", seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(1, 3, ndim=ndim, depth=2, base_filters=4, padding=padding)
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():  # batch norms with non-trivial statistics, folded by the export
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


@pytest.fixture(params=FAST)
def fast_engine(request) -> str:
    """Each engine of the [fast] extra (installed by the test extra, so present in CI)."""
    pytest.importorskip(request.param)
    return request.param


@pytest.mark.parametrize(
    ("ndim", "padding", "shape"),
    [(2, "same", (1, 70, 90)), (2, "valid", (1, 70, 90)), (3, "same", (1, 20, 30, 26))],
)
def test_engine_probabilities_equal_torch(fast_engine, ndim, padding, shape):
    net = _net(ndim, padding)
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    tile = None if ndim == 2 else 16
    ref = predict_tiled(net, image, device="cpu", engine="torch", tile_shape=tile)
    got = predict_tiled(net, image, device="cpu", engine=fast_engine, tile_shape=tile)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= TOLERANCE


def test_builtin_model_labels_identical(fast_engine):
    """The built-in model on the sample: same labels, probabilities within the tolerance."""
    model = load_model(None)
    image, _ = load_sample()
    ref_labels, ref = segment(image, model, engine="torch", return_probabilities=True)
    labels, probs = segment(image, model, engine=fast_engine, return_probabilities=True)
    assert np.abs(probs - ref).max() <= TOLERANCE
    np.testing.assert_array_equal(labels, ref_labels)


def test_export_is_cached_per_model_digest(fast_engine):
    seed = 3 + 100 * FAST.index(fast_engine)  # the engines share the ONNX file of a model
    net = _net(seed=seed)
    assert not is_prepared(net, fast_engine)
    engine_runner(net, fast_engine, CPU)
    path = cache_dir() / f"{model_digest(net)}.onnx"
    assert path.is_file() and is_prepared(net, fast_engine)
    stamp = path.stat().st_mtime_ns
    # a copy with the same weights (a new process, a reloaded file) reuses the export
    twin = _net(seed=seed)
    engine_runner(twin, fast_engine, CPU)
    assert path.stat().st_mtime_ns == stamp
    # changed weights: another digest, another file; no temporary files left behind
    with torch.no_grad():
        twin.head.weight.add_(1.0)
    assert model_digest(twin) != model_digest(net)
    engine_runner(twin, fast_engine, CPU)
    assert (cache_dir() / f"{model_digest(twin)}.onnx").is_file()
    assert not list(cache_dir().glob(".*.tmp"))


def test_segment_reports_engine_preparation(fast_engine):
    events = []
    segment(
        np.random.default_rng(0).random((64, 64)),
        _net(seed=5 + 100 * FAST.index(fast_engine)),
        engine=fast_engine,
        diameter=None,
        progress=events.append,
    )
    stages = [e.stage for e in events]
    assert stages[0] == f"preparing {fast_engine}" and stages[1] == stages[0]
    assert (events[0].done, events[1].done) == (0, 1)
    assert "predict" in stages


def test_auto_picks_fast_engine_for_large_jobs_only():
    installed = available_engines()
    net = _net(seed=7)
    fast = [name for name in installed if name != "torch"]
    assert resolve_engine("auto", net, CPU, pixels=100) == "torch"
    assert resolve_engine("auto", net, CPU, pixels=AUTO_MIN_PIXELS) == (fast or ["torch"])[0]
    assert resolve_engine(None, net, torch.device("cuda"), pixels=AUTO_MIN_PIXELS) == "torch"
    if fast:  # once exported, small jobs use it too
        engine_runner(net, fast[0], CPU)
        assert resolve_engine("auto", net, CPU, pixels=100) == fast[0]


def test_engine_errors_name_the_fix(monkeypatch):
    net = _net()
    with pytest.raises(UserInputError, match="engine must be one of"):
        resolve_engine("tensorrt", net, CPU)
    with pytest.raises(UserInputError, match="runs on the CPU"):
        resolve_engine(FAST[0], net, torch.device("cuda"))
    monkeypatch.setattr(engines, "available_engines", lambda: ["torch"])
    with pytest.raises(UserInputError, match=r"napari-unet\[fast\]"):
        resolve_engine(FAST[0], net, CPU)
    with pytest.raises(UserInputError, match="engine must be one of"):
        predict_tiled(net, np.zeros((1, 32, 32), np.float32), engine="fastest")


def test_unverified_engine_falls_back_to_torch(fast_engine, monkeypatch, caplog):
    net = _net(seed=9)
    image = np.random.default_rng(2).normal(size=(1, 40, 40)).astype(np.float32)
    monkeypatch.setattr(engines, "TOLERANCE", -1.0)  # nothing can pass
    with caplog.at_level(logging.WARNING, logger="napari_unet.inference.backends.engines"):
        got = predict_tiled(net, image, engine=fast_engine, device="cpu")
    assert "using torch" in caplog.text
    np.testing.assert_array_equal(got, predict_tiled(net, image, engine="torch", device="cpu"))


def test_int8_engine_keeps_the_builtin_models_objects():
    """openvino-int8: calibrated on the sample; close to torch, not equal; the same objects."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    from napari_unet.evaluation.instances import average_precision

    model = load_model(None)
    image, _ = load_sample()
    ref_labels, ref = segment(image, model, engine="torch", return_probabilities=True)
    labels, probs = segment(image, model, engine="openvino-int8", return_probabilities=True)
    assert np.abs(probs - ref).mean() <= engines.INT8_TOLERANCE
    assert average_precision(ref_labels, labels, 0.5).mean >= 0.9
    assert (cache_dir() / f"{model_digest(model)}-int8.onnx").is_file()


def test_auto_runs_only_score_verified_models_in_int8():
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    builtin = load_model(None)
    assert model_digest(builtin) in engines.INT8_VERIFIED
    assert resolve_engine("auto", builtin, CPU, pixels=AUTO_MIN_PIXELS) == "openvino-int8"
    engine_runner(builtin, "openvino-int8", CPU)  # even once prepared, small jobs: not int8
    assert resolve_engine("auto", builtin, CPU, pixels=100) != "openvino-int8"
    assert resolve_engine("auto", _net(), CPU, pixels=AUTO_MIN_PIXELS) == "openvino"
    assert resolve_engine("auto", builtin, torch.device("cuda"), pixels=AUTO_MIN_PIXELS) == "torch"


def test_int8_engine_needs_a_single_channel_2d_model():
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    with pytest.raises(UserInputError, match="calibrated on the bundled"):
        engine_runner(_net(ndim=3), "openvino-int8", CPU)


def test_faces_offer_the_same_engines():
    from napari_unet._napari.segment import _segment_settings as segment_widget
    from napari_unet.cli import segment as cli_segment

    assert cli_segment.ENGINES == ENGINES
    assert segment_widget.ENGINES == ENGINES
