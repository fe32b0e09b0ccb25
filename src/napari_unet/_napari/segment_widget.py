"""The U-Net Segment dock widget (grows into the full widget in its own issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import Container, Label

if TYPE_CHECKING:
    import napari


class SegmentWidget(Container):
    """U-Net Segment: opens in napari's dock."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self.append(Label(value="U-Net Segment"))
