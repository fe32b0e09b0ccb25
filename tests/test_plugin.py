"""The npe2 plugin: a valid manifest, three widgets and a sample that open in a real viewer,
and no torch import when napari starts or opens the plugin menu."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

PLUGIN = "napari-unet"
WIDGETS = ("U-Net Segment", "U-Net Train", "U-Net Evaluate")


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()  # every python_name resolves
    assert manifest.name == PLUGIN
    result = subprocess.run(
        [sys.executable, "-c", "from npe2.cli import main; main()", "validate", PLUGIN],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_plugin_manager_discovers_widgets_and_sample():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    widgets = [w.display_name for w in manifest.contributions.widgets]
    assert widgets == list(WIDGETS)
    samples = manifest.contributions.sample_data
    assert [s.key for s in samples] == ["nuclei"]
    menu = manifest.contributions.menus["napari/layers/segment"]
    assert len(menu) == 3


@pytest.mark.parametrize("widget_name", WIDGETS)
def test_widget_opens_in_viewer(make_napari_viewer, widget_name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, widget_name)
    key = f"{widget_name} ({PLUGIN})"
    assert dock.name == key
    assert viewer.window.dock_widgets[key] is widget


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "nuclei")
    kinds = sorted(type(layer).__name__ for layer in layers)
    assert kinds == ["Image", "Labels"]
    image = viewer.layers["nuclei"]
    labels = viewer.layers["nuclei ground truth"]
    assert image.data.shape == labels.data.shape == (260, 347)
    assert np.issubdtype(labels.data.dtype, np.integer)
    assert len(np.unique(labels.data)) - 1 == 129  # annotated nuclei


_NO_TORCH = """
import json, sys
{body}
heavy = sorted(m for m in ("torch", "safetensors", "scipy", "skimage") if m in sys.modules)
print(json.dumps(heavy))
"""


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("import napari_unet", id="import"),
        pytest.param("import napari_unet.cli; napari_unet.cli.build_parser()", id="cli-parser"),
        pytest.param(
            "from npe2 import PluginManager\n"
            "pm = PluginManager.instance(); pm.discover()\n"
            "mf = pm.get_manifest('napari-unet')\n"
            "assert len(mf.contributions.widgets) == 3",
            id="manifest-load",
        ),
    ],
)
def test_no_heavy_imports_at_start_up(body):
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH.format(body=body)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert heavy == [], f"imported at start-up: {heavy}"


def test_widget_modules_do_not_import_torch():
    """torch loads when a widget runs a job, not when napari imports the widget classes."""
    body = "\n".join(
        f"import napari_unet._napari.{name}"
        for name in (
            "segment.segment_widget",
            "train.train_widget",
            "evaluate.evaluate_widget",
            "sample_data",
        )
    )
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH.format(body=body)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "torch" not in json.loads(result.stdout.strip().splitlines()[-1])


def test_lazy_public_api_resolves():
    import napari_unet

    for name in ("UNet", "load_model", "save_model", "layer_summary", "UserInputError"):
        assert callable(getattr(napari_unet, name))
    with pytest.raises(AttributeError, match="no attribute"):
        napari_unet.does_not_exist  # noqa: B018
