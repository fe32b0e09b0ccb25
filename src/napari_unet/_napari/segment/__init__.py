"""The U-Net Segment dock: an image layer in, a Labels layer out, and Correct and retrain.

:mod:`.segment_widget` is the dock (the manifest's ``SegmentWidget``); :mod:`._segment_settings`
lays out its settings rows, :mod:`._segment_output` puts a result into the viewer and
:mod:`._results` records where each result came from and whether it was corrected since;
:mod:`._object_list` lists a result's objects least confident first, and :mod:`._retrain`
fine-tunes the model behind a result on the user's corrections, with the Train dock's job
and monitor (:mod:`napari_unet._napari.train`).
"""
