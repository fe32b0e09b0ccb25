"""The GUI side of the training preview: which slice the user looks at, and the preview layer.

The worker (:func:`._train_job.training_job`) asks :meth:`TrainingPreview.index` which slice
to predict; the index is kept up to date from the viewer's dims on the GUI thread (reading a
tuple attribute from the worker is safe). :meth:`TrainingPreview.show` writes each prediction
into one Labels layer, ``"<image> preview"``, on the labels' grid, updated in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._train_job import PreviewReady, PreviewSpec

if TYPE_CHECKING:
    import napari

    from ._train_inputs import PairSource


class TrainingPreview:
    """Preview of the first pair, following the viewer's current slice.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    labels_layer : napari.layers.Labels
        The first pair's labels layer: its grid (shape, scale, translate) is the preview's.
    source : PairSource
        The first pair's arrays.
    """

    def __init__(self, viewer: napari.viewer.Viewer, labels_layer: Any, source: PairSource) -> None:
        self._viewer = viewer
        self._labels_layer = labels_layer
        self.source = source
        self.index: tuple[int, ...] = ()
        self.update_index()
        viewer.dims.events.current_step.connect(self.update_index)

    @property
    def layer_name(self) -> str:
        return f"{self.source.image_name} preview"

    def spec(self, every: int) -> PreviewSpec:
        """What the worker needs: the arrays, the period, and a way to read the index."""
        return PreviewSpec(self.source, every, lambda: self.index)

    def update_index(self, *_: Any) -> None:
        """The leading indices (all but Y, X) of the labels at the viewer's current point."""
        shape = tuple(self.source.labels.shape)
        coords = np.round(self._labels_layer.world_to_data(self._viewer.dims.point))
        coords = coords.astype(int)[-len(shape) :][: len(shape) - 2]
        self.index = tuple(int(np.clip(c, 0, n - 1)) for c, n in zip(coords, shape))

    def show(self, event: PreviewReady) -> Any:
        """Write ``event.labels`` at ``event.index`` of the preview layer (made if needed)."""
        from napari.layers import Labels

        shape = tuple(self.source.labels.shape)
        layers = self._viewer.layers
        layer = layers[self.layer_name] if self.layer_name in layers else None
        if not isinstance(layer, Labels) or layer.data.shape != shape:
            if layer is not None:
                layers.remove(layer)
            layer = self._viewer.add_labels(
                np.zeros(shape, np.int32),  # untouched pages of np.zeros cost no memory
                name=self.layer_name,
                scale=self._labels_layer.scale,
                translate=self._labels_layer.translate,
                opacity=0.6,
            )
        layer.data[event.index] = event.labels
        layer.metadata["preview_epoch"] = event.epoch
        layer.metadata["preview_index"] = event.index
        layer.refresh()
        return layer

    def close(self) -> None:
        """Stop following the viewer's slice."""
        self._viewer.dims.events.current_step.disconnect(self.update_index)
