"""The Segment dock's Block field (Advanced): its Z Y X reach segment_iter(block=)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari.segment.segment_widget import FROM_FILE, SegmentWidget
from napari_unet.common.errors import UserInputError


def test_block_field_sets_the_block_of_a_z_stack(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.model_source.value = FROM_FILE
    widget.model_file.value = tiny_model_file
    stack = np.random.default_rng(0).random((4, 32, 40)).astype(np.float32)
    layer = viewer.add_image(stack, name="stack", scale=(3, 1, 1), axis_labels=("z", "y", "x"))
    widget.image.value = layer
    assert widget.block in widget.advanced.rows  # under Advanced, not up front
    assert widget._job(layer)["block"] is None  # empty: automatic
    widget.block.value = "2 16 20"
    assert widget._job(layer)["block"] == (2, 16, 20)
    widget.block.value = "64x512"
    with pytest.raises(UserInputError, match="Block must be three positive numbers"):
        widget._job(layer)
