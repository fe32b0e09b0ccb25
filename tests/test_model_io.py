"""Model files: the card round trip and a clear ModelFileError for every broken file."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_unet import UNet, load_model, save_model
from napari_unet.common.errors import ModelFileError, UserInputError
from napari_unet.model.files import (
    FORMAT_VERSION,
    INSTANCE_CLASSES,
    METADATA_KEY,
    builtin_model_path,
    read_card,
    resolve_model,
)


def _rewrite_document(src, dst, **changes):
    """Copy a model file, changing entries of its JSON document."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        document = json.loads(f.metadata()[METADATA_KEY])
    document.update(changes)
    save_file(load_file(str(src)), str(dst), metadata={METADATA_KEY: json.dumps(document)})
    return dst


# -- the card --------------------------------------------------------------------------------
def test_card_round_trip(tiny_model, tmp_path):
    path = save_model(
        tiny_model,
        tmp_path / "m.safetensors",
        name="nuclei-test",
        description="a test model",
        metrics={"dice": 0.5},
        provenance={"seed": 3},
        my_extra={"anything": [1, 2]},
    )
    card = read_card(path)
    assert card["format_version"] == FORMAT_VERSION
    assert card["architecture"] == tiny_model.config.to_dict()
    assert card["name"] == "nuclei-test"
    assert card["task"] == "instance"
    assert card["class_names"] == INSTANCE_CLASSES
    assert card["input"] == {"axes": "YX", "channels": 1}
    assert card["normalization"]["method"] == "percentile"
    assert card["metrics"] == {"dice": 0.5}
    assert card["provenance"]["seed"] == 3
    assert card["provenance"]["library_versions"]["torch"] == torch.__version__
    assert card["my_extra"] == {"anything": [1, 2]}
    loaded = load_model(path)
    assert loaded.card["name"] == "nuclei-test"
    assert "format_version" not in loaded.card and "architecture" not in loaded.card


def test_semantic_default_card_and_3d_axes(tmp_path):
    model = UNet(2, 4, ndim=3, depth=1, base_filters=2)
    card = read_card(save_model(model, tmp_path / "m.safetensors"))
    assert card["task"] == "semantic"
    assert card["class_names"] == ["background", "class 1", "class 2", "class 3"]
    assert card["input"] == {"axes": "ZYX", "channels": 2}


def test_half_precision_file_is_smaller_and_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    model = UNet(1, 3, depth=2, base_filters=8).eval()
    full = save_model(model, tmp_path / "full.safetensors")
    half = save_model(model, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-2, rtol=1e-2)


def test_save_is_atomic_and_rejects_bad_cards(tiny_model, tmp_path):
    target = tmp_path / "m.safetensors"
    with pytest.raises(UserInputError, match="JSON"):
        save_model(tiny_model, target, metrics={"bad": object()})
    with pytest.raises(UserInputError, match="task"):
        save_model(tiny_model, target, task="detection")
    with pytest.raises(UserInputError, match="class_names"):
        save_model(tiny_model, target, class_names=["a", "b"])
    with pytest.raises(UserInputError, match="3 classes"):
        save_model(
            UNet(1, 2, depth=1, base_filters=2), target, task="instance", class_names=["a", "b"]
        )
    assert list(tmp_path.iterdir()) == []  # no half-written or temporary file left behind


def test_load_model_device_and_resolve(tiny_model, tiny_model_file):
    model = load_model(tiny_model_file, device="cpu")
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert resolve_model(tiny_model) is tiny_model
    assert resolve_model(tiny_model_file).config == tiny_model.config
    assert resolve_model(str(tiny_model_file)).config == tiny_model.config


# -- broken files ----------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0.5, 0.99, 10])
def test_truncated_file(tiny_model_file, tmp_path, keep):
    data = tiny_model_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(ModelFileError, match=r"cut\.safetensors"):
        load_model(cut)


def test_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights\n" * 20)
    with pytest.raises(ModelFileError, match="not a readable model file"):
        load_model(path)


def test_pickle_is_never_loaded(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelFileError):
        load_model(path)
    path = tmp_path / "checkpoint.pt"
    torch.save(UNet(1, 2, depth=1, base_filters=2).state_dict(), path)
    with pytest.raises(ModelFileError):
        load_model(path)


def test_safetensors_file_that_is_not_a_napari_unet_model(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not a napari-unet model"):
        load_model(path)


def test_newer_format_version(tiny_model_file, tmp_path):
    path = _rewrite_document(
        tiny_model_file, tmp_path / "future.safetensors", format_version=FORMAT_VERSION + 1
    )
    with pytest.raises(ModelFileError, match=r"newer napari-unet.*upgrade"):
        load_model(path)
    with pytest.raises(ModelFileError, match="newer"):
        read_card(path)


def test_missing_format_version(tiny_model_file, tmp_path):
    path = _rewrite_document(tiny_model_file, tmp_path / "nover.safetensors", format_version="1")
    with pytest.raises(ModelFileError, match="format_version"):
        load_model(path)


def test_corrupt_card_json(tiny_model_file, tmp_path):
    path = tmp_path / "corrupt.safetensors"
    save_file(load_file(str(tiny_model_file)), str(path), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ModelFileError, match="corrupt model card"):
        load_model(path)


def test_weights_not_matching_architecture(tiny_model, tiny_model_file, tmp_path):
    arch = {**tiny_model.config.to_dict(), "base_filters": 8}
    path = _rewrite_document(tiny_model_file, tmp_path / "wide.safetensors", architecture=arch)
    with pytest.raises(ModelFileError, match="do not match the architecture"):
        load_model(path)
    arch = {**tiny_model.config.to_dict(), "depth": 3}
    path = _rewrite_document(tiny_model_file, tmp_path / "deep.safetensors", architecture=arch)
    with pytest.raises(ModelFileError, match="do not match the architecture"):
        load_model(path)


@pytest.mark.parametrize(
    "arch", [{"depth": "four"}, {"unknown_argument": 1}, {"padding": "reflect"}, None]
)
def test_invalid_architecture_in_card(tiny_model, tiny_model_file, tmp_path, arch):
    architecture = None if arch is None else {**tiny_model.config.to_dict(), **arch}
    path = _rewrite_document(
        tiny_model_file, tmp_path / "bad.safetensors", architecture=architecture
    )
    with pytest.raises(ModelFileError, match="invalid architecture"):
        load_model(path)


def test_unknown_builtin_model_name():
    with pytest.raises(UserInputError, match="unknown built-in model"):
        builtin_model_path("cells")


def test_saved_files_get_the_usual_permissions_not_private_temp_ones(tiny_model, tmp_path):
    import os
    import stat

    from napari_unet import save_model

    path = save_model(tiny_model, tmp_path / "m.safetensors")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
