"""``napari-unet info`` and the CLI's handling of user errors (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_unet import UNet, save_model
from napari_unet._version import __version__
from napari_unet.cli import EXIT_USAGE, main
from napari_unet.model.summary import count_parameters


def test_info_prints_card_and_summary(tiny_model, tmp_path, capsys):
    path = save_model(
        tiny_model,
        tmp_path / "m.safetensors",
        name="tiny",
        description="for tests",
        metrics={"dice": 0.75},
    )
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Model: tiny" in out
    assert "Description: for tests" in out
    assert "Task: instance  classes: background, interior, boundary" in out
    assert "depth=2" in out and "base_filters=4" in out
    assert "dice: 0.75" in out
    assert "Layer summary for input shape (1, 1, 256, 256):" in out
    assert "encoders.0.conv1" in out and "head" in out
    assert out.rstrip().endswith(f"Total params: {count_parameters(tiny_model):,}")


def test_info_with_shape_on_a_valid_padding_model(tmp_path, capsys):
    model = UNet(1, 2, depth=2, base_filters=4, padding="valid")
    path = save_model(model, tmp_path / "valid.safetensors")
    assert main(["info", str(path), "--shape", "60", "44"]) == 0
    out = capsys.readouterr().out
    assert "(1, 1, 60, 44)" in out
    assert "(1, 2, 20, 4)" in out  # head output: 60 -> 20, 44 -> 4


def test_info_default_shape_is_valid_for_a_valid_padding_model(tmp_path, capsys):
    model = UNet(1, 2, depth=3, base_filters=2, padding="valid")
    path = save_model(model, tmp_path / "valid.safetensors")
    assert main(["info", str(path)]) == 0
    size = model.valid_sizes_near(256)[1]
    assert f"(1, 1, {size}, {size})" in capsys.readouterr().out


def test_info_json(tiny_model_file, tiny_model, capsys):
    assert main(["info", str(tiny_model_file), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["architecture"] == tiny_model.config.to_dict()
    assert document["name"] == "tiny"


@pytest.mark.parametrize(
    ("make_args", "fragment"),
    [
        (lambda tmp: ["info", str(tmp / "missing.safetensors")], "not found"),
        (lambda tmp: ["info", str(_text_file(tmp))], "not a readable model file"),
        (
            lambda tmp: ["info", str(_model(tmp)), "--shape", "100", "64"],
            "nearest valid sizes are 96 or 112",
        ),
        (lambda tmp: ["info", str(_model(tmp)), "--shape", "64"], "2 spatial axes"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, make_args, fragment):
    code = main(make_args(tmp_path))
    captured = capsys.readouterr()
    assert code == EXIT_USAGE
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("napari-unet info: error: ")
    assert fragment in lines[0]


def _text_file(tmp):
    path = tmp / "notes.safetensors"
    path.write_text("not a model")
    return path


def _model(tmp):
    return save_model(UNet(1, 2, depth=4, base_filters=2), tmp / "d4.safetensors")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_unet", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_subprocess_user_error_has_no_traceback(tmp_path):
    bad = _text_file(tmp_path)
    result = _run_cli("info", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("napari-unet info: error:")


def test_subprocess_info_and_version(tiny_model_file):
    result = _run_cli("info", str(tiny_model_file))
    assert result.returncode == 0, result.stderr
    assert "Model: tiny" in result.stdout and "Total params:" in result.stdout
    version = _run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"napari-unet {__version__}"


def test_bad_usage_exits_2():
    assert main(["info"]) == 2
    assert main(["no-such-command"]) == 2
