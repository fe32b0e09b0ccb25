"""Segmenting an image with a model: axes, normalisation, object size, tile plan, tiled
prediction (in memory and as a dask graph), post-processing to labels, rescaling, and the one
pipeline :func:`~.pipeline.segment_iter` that strings them in that order.

May import :mod:`napari_unet.model` and :mod:`napari_unet.common`; never training, evaluation
or the faces (CLI, napari). Read :mod:`.pipeline` first: it checks the arguments
(:mod:`.inputs`) and runs the steps, each a function of a sub-package below it, none of which
calls back up: ``images`` (axes, channel, normalisation), ``sizing`` (object size, rescaling),
:mod:`.frames` (the per-frame job) -> ``tiling`` (tile plan, tiled prediction) -> ``backends``
(the engine that runs the network), ``labels`` (post-processing), ``volumes`` (Z stacks with a
2D model) and ``clusters`` (dask.distributed).
"""
