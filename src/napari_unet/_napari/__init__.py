"""The napari face of napari-unet: widgets, layer <-> array conversion, workers, sample data.

This is the only package that imports napari, qtpy or magicgui. Widgets stay thin: they collect
parameters, turn layers into arrays, call the engine (:mod:`napari_unet.inference`, :mod:`napari_unet.training`, :mod:`napari_unet.evaluation`), and turn results into layers.
"""
