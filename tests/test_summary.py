"""The layer summary: per-layer output shapes and parameter counts, checked against the paper."""

from __future__ import annotations

import pytest
import torch

from napari_unet import UNet
from napari_unet.common.errors import ShapeError
from napari_unet.model.summary import count_parameters, format_summary, layer_summary


def _conv_params(k: int, c_in: int, c_out: int, ndim: int = 2) -> int:
    """``k**ndim * in * out + out``: a convolution with bias."""
    return k**ndim * c_in * c_out + c_out


def test_first_convolutions_of_the_small_variant():
    rows = layer_summary(UNet(3, 2, base_filters=16), (64, 64))
    convs = [r for r in rows if r.kind == "Conv2d"]
    assert convs[0].params == 448 == _conv_params(3, 3, 16)
    assert convs[1].params == 2320 == _conv_params(3, 16, 16)
    assert convs[0].output_shape == (1, 16, 64, 64)


@pytest.fixture(scope="module")
def paper_rows():
    net = UNet(1, 2, depth=4, base_filters=64, batch_norm=False, padding="valid")
    return net, layer_summary(net, (572, 572))


def test_paper_network_size_and_output(paper_rows):
    net, rows = paper_rows
    total = count_parameters(net)
    assert total == 31_030_658  # "~31.0M", the figure usually quoted for the paper's net
    assert sum(r.params for r in rows) == total
    assert rows[-1].name == "head"
    assert rows[-1].output_shape == (1, 2, 388, 388)


def test_paper_network_feature_map_sizes(paper_rows):
    """The sizes of Fig. 1 of Ronneberger et al. (2015), level by level."""
    _, rows = paper_rows
    shapes = {r.name: r.output_shape[1:] for r in rows}
    expected = {
        "encoders.0.conv1": (64, 570, 570),
        "encoders.0.conv2": (64, 568, 568),
        "encoders.1.conv2": (128, 280, 280),
        "encoders.2.conv2": (256, 136, 136),
        "encoders.3.conv2": (512, 64, 64),
        "bottleneck.conv1": (1024, 30, 30),
        "bottleneck.conv2": (1024, 28, 28),
        "upsamples.0": (512, 56, 56),
        "decoders.0.conv2": (512, 52, 52),
        "decoders.1.conv2": (256, 100, 100),
        "decoders.2.conv2": (128, 196, 196),
        "decoders.3.conv2": (64, 388, 388),
    }
    for name, shape in expected.items():
        assert shapes[name] == shape, name
    # the first decoder conv takes the cropped skip (512) concatenated with the upsampled (512)
    decoder0 = next(r for r in rows if r.name == "decoders.0.conv1")
    assert decoder0.params == _conv_params(3, 1024, 512)
    up0 = next(r for r in rows if r.name == "upsamples.0")
    assert up0.params == 2 * 2 * 1024 * 512 + 512


def test_batch_norm_and_relu_rows():
    rows = layer_summary(UNet(1, 2, depth=1, base_filters=4), (8, 8))
    norm = next(r for r in rows if r.kind == "BatchNorm2d")
    relu = next(r for r in rows if r.kind == "ReLU")
    assert norm.params == 2 * 4  # weight and bias per channel
    assert relu.params == 0


def test_3d_summary_and_batch_size():
    net = UNet(2, 3, ndim=3, depth=1, base_filters=4)
    rows = layer_summary(net, (4, 8, 8), batch=5)
    assert rows[0].kind == "Conv3d"
    assert rows[0].params == _conv_params(3, 2, 4, ndim=3)
    assert rows[-1].output_shape == (5, 3, 4, 8, 8)
    assert sum(r.params for r in rows) == count_parameters(net)


def test_summary_leaves_the_model_untouched():
    net = UNet(1, 2, depth=1, base_filters=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    layer_summary(net, (16, 16))
    assert all(p.device.type == "cpu" for p in net.parameters())
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_summary_rejects_invalid_shape():
    with pytest.raises(ShapeError, match="nearest valid sizes are 16 or 32"):
        layer_summary(UNet(1, 2, depth=4), (20, 32))


def test_format_summary_table():
    net = UNet(3, 2, depth=1, base_filters=16)
    rows = layer_summary(net, (8, 8))
    text = format_summary(rows, count_parameters(net))
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "Type", "Output", "shape", "Params"]
    assert any(
        line.startswith("encoders.0.conv1") and line.rstrip().endswith("448") for line in lines
    )
    assert any("2,320" in line for line in lines)
    assert lines[-1] == f"Total params: {count_parameters(net):,}"
    assert len(lines) == len(rows) + 4  # header, two rules, total
