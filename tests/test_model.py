"""The U-Net's contract over 2D/3D, depth, padding, channels and classes.

One contract, every configuration: the output shape the model announces is the shape it
returns, gradients reach every parameter, and a save/load round trip gives identical outputs.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from napari_unet import UNet, load_model, save_model
from napari_unet.common.errors import ShapeError, UserInputError
from napari_unet.model.unet import UNetConfig, build_model, center_crop

CONFIGS = [
    pytest.param(
        {"ndim": ndim, "depth": depth, "padding": padding, "in_channels": c, "num_classes": k},
        id=f"{ndim}d-depth{depth}-{padding}-c{c}-k{k}",
    )
    for ndim, depth, padding, (c, k) in itertools.product(
        (2, 3), (1, 2), ("same", "valid"), ((1, 3), (3, 2))
    )
]


def _make(cfg: dict, batch_norm: bool = True) -> UNet:
    torch.manual_seed(0)
    return UNet(
        cfg["in_channels"],
        cfg["num_classes"],
        ndim=cfg["ndim"],
        depth=cfg["depth"],
        padding=cfg["padding"],
        base_filters=2,
        batch_norm=batch_norm,
    )


def _input(model: UNet, batch: int = 2) -> torch.Tensor:
    # the smallest valid size at or above 2**depth (+ a little), different per axis
    spatial = [model.valid_sizes_near(2**model.config.depth + 3 * i)[1] for i in range(model.ndim)]
    return torch.randn(batch, model.in_channels, *spatial)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_output_shape_matches_contract(cfg):
    model = _make(cfg).eval()
    x = _input(model)
    spatial = tuple(x.shape[2:])
    with torch.no_grad():
        y = model(x)
    assert y.shape == (x.shape[0], cfg["num_classes"], *model.output_shape(spatial))
    if cfg["padding"] == "same":
        assert tuple(y.shape[2:]) == spatial
    else:
        assert all(o < s for o, s in zip(y.shape[2:], spatial))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_backward_reaches_every_parameter(cfg):
    model = _make(cfg).train()
    x = _input(model)
    logits = model(x)
    target = torch.randint(0, cfg["num_classes"], (x.shape[0], *logits.shape[2:]))
    loss = torch.nn.functional.cross_entropy(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("cfg", CONFIGS)
def test_save_load_round_trip_is_identical(cfg, tmp_path):
    model = _make(cfg)
    # one training-mode pass so the batch-norm running statistics are not the defaults
    model.train()(_input(model))
    model.eval()
    x = _input(model, batch=1)
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_round_trip_without_batch_norm(tmp_path):
    model = UNet(2, 4, depth=2, base_filters=3, batch_norm=False, padding="valid").eval()
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    x = torch.randn(1, 2, 44, 60)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_paper_network_maps_572_to_388():
    net = UNet(1, 2, depth=4, base_filters=64, batch_norm=False, padding="valid")
    assert net.output_shape((572, 572)) == (388, 388)
    # the 3D form shares the per-axis arithmetic
    assert UNet(1, 2, ndim=3, depth=4, padding="valid").output_shape((572, 572, 188)) == (
        388,
        388,
        4,
    )


@pytest.mark.parametrize(
    ("depth", "size", "expected"),
    [
        # by hand: each level loses 4 pixels to two valid 3x3 convs, pools by 2 on the way down,
        # and doubles then loses 4 on the way up
        (1, 18, 2),  # 18 -4=14 /2=7 -4=3 *2=6 -4=2
        (2, 44, 4),  # 44 -4=40 /2=20 -4=16 /2=8 -4=4 *2=8 -4=4 *2=8 -4=4
        (4, 572, 388),
        (0, 7, 3),
    ],
)
def test_valid_output_size_by_hand(depth, size, expected):
    assert UNet(1, 2, depth=depth, padding="valid").output_size(size) == expected


def test_valid_padding_crops_skip_connections():
    skip = torch.arange(36.0).reshape(1, 1, 6, 6)
    cropped = center_crop(skip, (2, 2))
    assert torch.equal(cropped[0, 0], torch.tensor([[14.0, 15.0], [20.0, 21.0]]))


def test_same_padding_needs_multiples_of_two_to_the_depth():
    net = UNet(1, 2, depth=3)
    assert net.output_size(64) == 64
    assert net.output_size(60) is None
    assert net.valid_sizes_near(60) == (56, 64)


@pytest.mark.parametrize(
    ("kwargs", "shape", "fragments"),
    [
        ({"depth": 4}, (100, 64), ["axis 0", "96", "112"]),
        ({"depth": 4, "padding": "valid"}, (572, 570), ["axis 1", "556", "572"]),
        ({"depth": 4, "padding": "valid"}, (10, 572), ["smallest valid size is 188"]),
        ({"depth": 2, "ndim": 3}, (8, 8, 6), ["axis 2", "4", "8"]),
    ],
)
def test_invalid_input_size_names_nearest_valid_sizes(kwargs, shape, fragments):
    net = UNet(1, 2, base_filters=2, **kwargs)
    with pytest.raises(ShapeError) as info:
        net.check_input_shape(shape)
    for fragment in fragments:
        assert fragment in str(info.value)
    # forward raises the same error before any computation
    with pytest.raises(ShapeError, match=r"nearest valid sizes|smallest valid size"):
        net(torch.zeros(1, 1, *shape))


def test_valid_sizes_near_small_inputs_for_every_depth():
    for depth in range(0, 9):
        net = UNet(1, 2, depth=depth, base_filters=1, padding="valid")
        below, above = net.valid_sizes_near(1)
        assert below is None
        assert net.output_size(above) is not None
        assert net.output_size(above - 1) is None


def test_forward_rejects_wrong_rank_and_channels():
    net = UNet(3, 2, depth=1, base_filters=2)
    with pytest.raises(ShapeError, match="4D tensor"):
        net(torch.zeros(3, 8, 8))
    with pytest.raises(ShapeError, match="3 input channel"):
        net(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ShapeError, match="2 spatial axes"):
        net.check_input_shape((8, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"depth": -1}, "depth"),
        ({"depth": 2.0}, "depth"),
        ({"base_filters": 0}, "base_filters"),
        ({"ndim": 4}, "ndim"),
        ({"padding": "reflect"}, "padding"),
        ({"batch_norm": 1}, "batch_norm"),
        ({"in_channels": True}, "in_channels"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(kwargs, name):
    with pytest.raises(UserInputError, match=name):
        UNet(**kwargs)


def test_config_round_trips_through_dict():
    config = UNetConfig(
        in_channels=2, num_classes=5, ndim=3, depth=3, base_filters=8, padding="valid"
    )
    model = build_model(config.to_dict())
    assert model.config == config
    assert (model.ndim, model.in_channels, model.num_classes) == (3, 2, 5)
