"""The widgets and BioImage.IO packages: export from Train and Segment, segment with a package."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet import segment
from napari_unet._napari import _model_registry as registry
from napari_unet._napari.segment.segment_widget import FROM_FILE, SegmentWidget
from napari_unet._napari.train._train_settings import START_NEW
from napari_unet._napari.train.train_widget import TrainWidget
from napari_unet.common.sample import load_sample

TIMEOUT_MS = 300_000


@pytest.fixture
def viewer(make_napari_viewer):
    registry.clear_models()
    yield make_napari_viewer()
    registry.clear_models()


def test_export_from_train_then_segment_with_the_package(viewer, qtbot, tmp_path):
    image, labels = load_sample()
    viewer.add_image(image[:96, :128], name="nuclei")
    viewer.add_labels(labels[:96, :128], name="nuclei gt")
    train = TrainWidget(viewer)
    train.architecture.start_from.value = START_NEW
    train.architecture.depth.value, train.architecture.base_filters.value = 2, 4
    h = train.hyper
    h.patch.value, h.epochs.value, h.steps.value, h.batch_size.value = 32, 1, 2, 2
    h.device.value, h.augment.value = "cpu", False
    train.model_name.value = "tiny zoo"
    assert not train.export_button.enabled
    assert train.run() is not None
    qtbot.waitUntil(lambda: train.worker is None, timeout=TIMEOUT_MS)
    assert train.export_button.enabled

    assert train.export(tmp_path / "tiny.safetensors") is not None
    qtbot.waitUntil(lambda: "exported" in train.message.value or "failed" in train.message.value,
                    timeout=TIMEOUT_MS)  # fmt: skip
    package = tmp_path / "tiny.zip"
    assert "exported" in train.message.value and package.is_file()

    seg = SegmentWidget(viewer)
    seg.image.value = viewer.layers["nuclei"]
    seg.model_source.value = FROM_FILE
    seg.model_file.value = package
    seg.auto_size.value = False
    assert seg.run() is not None
    qtbot.waitUntil(lambda: not seg.running, timeout=TIMEOUT_MS)
    result = viewer.layers["nuclei labels"].data
    expected = segment(image[:96, :128], model=str(package), diameter=None)
    np.testing.assert_array_equal(result, expected)

    # Correct and retrain on the package's result: the package's U-Net is fine-tuned
    corrected = viewer.layers["nuclei labels"]
    corrected.paint((20, 20), int(np.max(result)) + 1)  # the user draws a missed object
    seg.retrain.epochs.value = 1
    assert seg.retrain.run() is not None, seg.retrain.status.value
    qtbot.waitUntil(lambda: not seg.retrain.running, timeout=TIMEOUT_MS)
    assert seg.retrain.model is not None, seg.retrain.status.value
    assert seg.retrain.model_name == "tiny corrected"
    assert registry.trained_choice("tiny corrected") in seg.model_source.choices  # offered
    assert seg.model_source.value == FROM_FILE  # not used: nothing held back to compare on

    # the Segment dock exports its chosen model too; a package is not exported again
    assert seg.export_model(tmp_path / "again.zip") is None
    assert "already a BioImage.IO package" in seg.status.value
    seg.model_source.value = seg.model_source.choices[1]  # the model trained above
    assert seg.export_model(tmp_path / "from_segment.zip") is not None
    qtbot.waitUntil(lambda: "exported" in seg.status.value or "failed" in seg.status.value,
                    timeout=TIMEOUT_MS)  # fmt: skip
    assert "exported" in seg.status.value and (tmp_path / "from_segment.zip").is_file()
