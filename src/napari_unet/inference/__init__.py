"""Segmenting an image with a model: axes, normalisation, object size, tile plan, tiled
prediction (in memory and as a dask graph), post-processing to labels, rescaling, and the one
pipeline :func:`~.pipeline.segment_iter` that strings them in that order.

May import :mod:`napari_unet.model` and :mod:`napari_unet.common`; never training, evaluation
or the faces (CLI, napari). Read :mod:`.pipeline` first: each step is a function of a lower
module here (``axes``, ``size``, ``rescale``, ``frames`` -> ``predict`` -> ``tiles`` /
``tile_plan``, ``postprocess``), none of which calls back up.
"""
