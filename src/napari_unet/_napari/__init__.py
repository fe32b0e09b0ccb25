"""The napari face of napari-unet: widgets, layer <-> array conversion, workers, sample data.

This is the only package that imports napari, qtpy or magicgui. Widgets stay thin: they collect
parameters, turn layers into arrays, call the engine (:mod:`napari_unet.inference`,
:mod:`napari_unet.training`, :mod:`napari_unet.evaluation`), and turn results into layers.

One sub-package per dock: ``segment`` (with Correct and retrain, which uses ``train``'s job and
monitor), ``train`` and ``evaluate``; the modules beside them are shared: the dock layout
(:mod:`._dock`), messages (:mod:`._feedback`), layers <-> arrays (:mod:`._layers`), the
session's models and the Segment model choice (:mod:`._model_registry`), the stage progress
bar (:mod:`._stage_bar`), the BioImage.IO export (:mod:`._zoo_export`) and the sample data.
"""
