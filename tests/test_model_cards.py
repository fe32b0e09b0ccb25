"""Damaged or hand-edited model files: one clear line (CLI exit 2), a ModelFileError in the API.

Every row of :data:`BAD_CARDS` / :data:`BAD_WEIGHTS` writes a copy of the tiny model file with
one bad card entry or bad tensors, then checks that ``napari-unet info`` refuses it with one
stderr line naming the file, the entry and its value (no traceback, no internal error), and
that :func:`napari_unet.load_model` raises :class:`~napari_unet.common.errors.UserInputError`.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from napari_unet import load_model, save_model, segment
from napari_unet.cli import main
from napari_unet.cli._errors import MAX_MESSAGE
from napari_unet.common.errors import ModelFileError, UserInputError
from napari_unet.model.files import BUILTIN_MODELS, METADATA_KEY, builtin_model_path, read_card

FIRST = "encoders.0.conv1.weight"  # (4, 1, 3, 3) in the tiny model


def _document(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[METADATA_KEY])


def _write(src, dst, *, card=None, text=None, tensors=None):
    """Copy the model file ``src`` to ``dst``: ``card(document)`` edits its JSON document in
    place (or ``text`` replaces it), ``tensors(state)`` edits its weights in place."""
    document = _document(src)
    if card is not None:
        card(document)
    state = load_file(str(src))
    if tensors is not None:
        tensors(state)
    text = json.dumps(document) if text is None else text  # NaN/inf as JSON's NaN/Infinity
    save_file(state, str(dst), metadata={METADATA_KEY: text})
    return dst


def _set(section, key, value):
    """An edit that sets ``document[section][key]`` (``document[key]`` with no section)."""

    def edit(document):
        if section is None:
            document[key] = value
        else:
            document.setdefault(section, {})[key] = value

    return edit


def _drop(key):
    return lambda document: document.pop(key)


def _percentiles(low, high):
    """An edit of the normalisation percentiles (``None``: the entry is left out)."""

    def edit(document):
        spec = document["normalization"] = {"method": "percentile", "low": low, "high": high}
        for key in [k for k in ("low", "high") if spec[k] is None]:
            del spec[key]

    return edit


# (id, edit of the document or the raw card text, fragments the message must hold)
BAD_CARDS = [
    ("list-card", {"text": "[1, 2, 3]"}, ["must be a JSON object", "got list"]),
    ("string-card", {"text": '"a model"'}, ["must be a JSON object", "got str"]),
    ("number-card", {"text": "3"}, ["must be a JSON object"]),
    ("null-card", {"text": "null"}, ["must be a JSON object"]),
    ("deeply-nested-card", {"text": "[" * 100_000}, ["corrupt model card"]),
    ("low-nan", {"card": _set("normalization", "low", math.nan)}, ["normalization.low", "nan"]),
    ("high-inf", {"card": _set("normalization", "high", math.inf)}, ["normalization.high", "inf"]),
    ("low-text", {"card": _set("normalization", "low", "1")}, ["normalization.low", "'1'"]),
    ("low-negative", {"card": _set("normalization", "low", -1)}, ["normalization.low", "-1"]),
    ("high-above-100", {"card": _set("normalization", "high", 150)}, ["normalization.high", "150"]),
    (
        "low-above-high",
        {"card": _percentiles(99.8, 1.0)},
        ["normalization.low (99.8) must be below normalization.high (1.0)"],
    ),
    ("low-equals-high", {"card": _percentiles(50, 50)}, ["must be below"]),
    ("low-above-default-high", {"card": _percentiles(99.9, None)}, ["(99.9) must be below"]),
    ("norm-list", {"card": _set(None, "normalization", [1, 99])}, ["normalization must be"]),
    ("norm-method", {"card": _set("normalization", "method", "zscore")}, ["'zscore'"]),
    ("seed-7", {"card": _set("postprocessing", "seed_threshold", 7)}, ["seed_threshold", "7"]),
    ("seed-0", {"card": _set("postprocessing", "seed_threshold", 0)}, ["seed_threshold", "0"]),
    (
        "foreground-1",
        {"card": _set("postprocessing", "foreground_threshold", 1.0)},
        ["postprocessing.foreground_threshold", "1.0"],
    ),
    (
        "foreground-nan",
        {"card": _set("postprocessing", "foreground_threshold", math.nan)},
        ["postprocessing.foreground_threshold", "nan"],
    ),
    ("split-negative", {"card": _set("postprocessing", "split", -0.5)}, ["split", "-0.5"]),
    ("min-size-negative", {"card": _set("postprocessing", "min_size", -3)}, ["min_size", "-3"]),
    ("min-size-fraction", {"card": _set("postprocessing", "min_size", 2.5)}, ["min_size", "2.5"]),
    ("min-size-text", {"card": _set("postprocessing", "min_size", "big")}, ["min_size", "'big'"]),
    ("min-size-bool", {"card": _set("postprocessing", "min_size", True)}, ["min_size", "True"]),
    ("post-list", {"card": _set(None, "postprocessing", [0.5])}, ["postprocessing must be"]),
    ("diameter-text", {"card": _set(None, "object_diameter", "big")}, ["object_diameter", "big"]),
    ("diameter-negative", {"card": _set(None, "object_diameter", -5)}, ["object_diameter", "-5"]),
    ("diameter-zero", {"card": _set(None, "object_diameter", 0)}, ["object_diameter", "> 0"]),
    ("diameter-nan", {"card": _set(None, "object_diameter", math.nan)}, ["object_diameter", "nan"]),
    ("diameter-inf", {"card": _set(None, "object_diameter", math.inf)}, ["object_diameter", "inf"]),
    (
        "no-architecture",
        {"card": _drop("architecture")},
        ["invalid architecture", "'architecture' entry is missing"],
    ),
    ("architecture-null", {"card": _set(None, "architecture", None)}, ["architecture must be"]),
    ("architecture-list", {"card": _set(None, "architecture", [1, 2])}, ["architecture must be"]),
    ("depth-text", {"card": _set("architecture", "depth", "four")}, ["depth", "'four'"]),
    ("unknown-arch-key", {"card": _set("architecture", "kernel", 5)}, ["unknown", "'kernel'"]),
    ("task-unknown", {"card": _set(None, "task", "detection")}, ["task", "'detection'"]),
    ("class-names-count", {"card": _set(None, "class_names", ["a", "b"])}, ["class_names has 2"]),
    ("class-names-text", {"card": _set(None, "class_names", "abc")}, ["class_names", "'abc'"]),
    ("input-list", {"card": _set(None, "input", ["YX"])}, ["input must be"]),
    ("input-channels", {"card": _set("input", "channels", -1)}, ["input.channels", "-1"]),
    ("provenance-list", {"card": _set(None, "provenance", [1])}, ["provenance must be"]),
    ("metrics-text", {"card": _set(None, "metrics", "good")}, ["metrics must be"]),
    ("name-number", {"card": _set(None, "name", 3)}, ["name must be text", "3"]),
    ("format-version-bool", {"card": _set(None, "format_version", True)}, ["format_version"]),
]


def _poison(value):
    def edit(state):
        state[FIRST] = state[FIRST].clone()
        state[FIRST].view(-1)[1] = value

    return edit


def _in_channels(n):
    return lambda document: document["architecture"].update(in_channels=n)


BAD_WEIGHTS = [
    ("weights-nan", {"tensors": _poison(math.nan)}, ["NaN or infinite", FIRST, "1 of 36"]),
    ("weights-inf", {"tensors": _poison(-math.inf)}, ["NaN or infinite", FIRST]),
    (
        "weights-half-overflow",
        {"tensors": lambda s: s.update({FIRST: torch.full((4, 1, 3, 3), 1e5).half()})},
        ["NaN or infinite", "36 of 36"],
    ),
    (
        "in-channels-not-matching",
        {"card": _in_channels(3)},
        [
            "its weights do not match the architecture in its card",
            f"{FIRST}: shape (4, 1, 3, 3) in the file, (4, 3, 3, 3) expected",
        ],
    ),
    (
        "tensor-missing",
        {"tensors": lambda s: s.pop(FIRST)},
        [f"{FIRST} is missing from the file"],
    ),
    (
        "tensor-unexpected",
        {"tensors": lambda s: s.update(extra=torch.zeros(2))},
        ["weights the architecture does not use: extra"],
    ),
    (
        "tensor-shape",
        {"tensors": lambda s: s.update({"encoders.0.conv1.bias": torch.zeros(5)})},
        ["encoders.0.conv1.bias: shape (5,) in the file, (4,) expected"],
    ),
]


def _check_refused(path, fragments, capsys):
    capsys.readouterr()
    assert main(["info", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("napari-unet info: ")
    assert "internal error" not in line and "Traceback" not in captured.err + captured.out
    assert str(path) in line
    assert not line.endswith("..."), "the message was cut"
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    with pytest.raises(UserInputError) as caught:
        load_model(path)
    assert isinstance(caught.value, ModelFileError)
    message = str(caught.value)
    assert "\n" not in message and len(message) <= MAX_MESSAGE
    return message


@pytest.mark.parametrize(
    ("edit", "fragments"), [row[1:] for row in BAD_CARDS], ids=[row[0] for row in BAD_CARDS]
)
def test_bad_card_is_refused_in_one_line(tiny_model_file, tmp_path, capsys, edit, fragments):
    path = _write(tiny_model_file, tmp_path / "bad.safetensors", **edit)
    message = _check_refused(path, fragments, capsys)
    if "format_version" not in message and "corrupt" not in message:
        assert "edited by hand" in message and "re-export or retrain" in message
    with pytest.raises(ModelFileError):  # the card alone is refused too (widgets read it)
        read_card(path)


@pytest.mark.parametrize(
    ("edit", "fragments"), [row[1:] for row in BAD_WEIGHTS], ids=[row[0] for row in BAD_WEIGHTS]
)
def test_bad_weights_are_refused_in_one_line(tiny_model_file, tmp_path, capsys, edit, fragments):
    path = _write(tiny_model_file, tmp_path / "bad.safetensors", **edit)
    message = _check_refused(path, fragments, capsys)
    assert "edited by hand" in message and "re-export or retrain" in message


def test_segment_refuses_a_bad_model_file_in_one_line(tiny_model_file, tmp_path, capsys):
    """Every command loads through the same check: segment --model as an example."""
    import tifffile

    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    path = _write(tiny_model_file, tmp_path / "bad.safetensors", text="[1, 2, 3]")
    capsys.readouterr()
    code = main(["segment", str(image), "--model", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "must be a JSON object" in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1


def test_good_tiny_model_loads_and_segments(tiny_model, tiny_model_file, capsys):
    model = load_model(tiny_model_file)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    labels = segment(np.random.default_rng(0).random((32, 32)).astype(np.float32), model)
    assert labels.shape == (32, 32) and labels.dtype.kind in "iu"
    assert main(["info", str(tiny_model_file)]) == 0
    assert "Model: tiny" in capsys.readouterr().out


def test_valid_edge_values_still_load(tiny_model, tmp_path):
    """Boundaries that are allowed: percentiles 0 and 100, split 0, min_size 0 (or 20.0),
    no normalisation percentiles (the defaults), object_diameter null, a method without
    percentiles, half-precision weights."""
    path = save_model(
        tiny_model,
        tmp_path / "edge.safetensors",
        half=True,
        normalization={"method": "percentile", "low": 0, "high": 100},
        postprocessing={
            "seed_threshold": 0.01,
            "foreground_threshold": 0.99,
            "split": 0,
            "min_size": 0,
            "chosen_by": "hand",
        },
        object_diameter=None,
    )
    assert load_model(path).card["postprocessing"]["min_size"] == 0
    for normalization in ({"method": "minmax"}, {"method": "none", "low": "ignored"}, {}, None):
        edited = _write(
            path, tmp_path / "n.safetensors", card=_set(None, "normalization", normalization)
        )
        load_model(edited)
    edited = _write(path, tmp_path / "m.safetensors", card=_set("postprocessing", "min_size", 20.0))
    load_model(edited)


def test_inconsistent_size_model_is_still_only_ignored(tiny_model_file, tmp_path, caplog):
    """size_model entries keep their own handling: a warning at segmentation, not a refusal."""
    from napari_unet.inference.sizing.size_search import size_model_settings

    entry = {"version": 2, "reliable": [30.0, 10.0], "working_diameter": 20.0, "calibration": 1}
    path = _write(tiny_model_file, tmp_path / "s.safetensors", card=_set(None, "size_model", entry))
    model = load_model(path)
    with caplog.at_level(logging.WARNING):
        assert size_model_settings(model) is None
    assert "inconsistent size_model" in caplog.text


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_builtin_models_pass_the_checks(name, capsys):
    assert load_model(name).card["name"] == name
    assert read_card(builtin_model_path(name))["name"] == name
    assert main(["info", name]) == 0
    assert f"Model: {name}" in capsys.readouterr().out
