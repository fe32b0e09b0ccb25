"""Object size: how much to resample an image so its objects look as the model expects.

:mod:`.size` measures the objects (the foreground measure, ``diameter="auto"``),
:mod:`.size_search` searches coarse to fine with a model's fitted ``size_model``, and
:mod:`.rescale` resamples the image by the chosen factor and brings the results back.
"""
