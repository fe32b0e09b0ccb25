"""Tiled prediction: class probabilities of an image of any size, tile by tile.

:mod:`.tile_plan` plans the tiles and their blending as data, :mod:`.tiles` holds the pieces
both engines share (reading a window, checks), :mod:`.predict` runs the plan in memory (or
into a zarr array) and :mod:`.predict_dask` builds it as a dask graph for clusters.
"""
