"""Training a U-Net: the validated config, the loop, losses, validation, checkpoints for exact
resume, and :func:`~.arrays.train` from arrays.

May import :mod:`napari_unet.inference` (normalisation, post-processing, tiled prediction for
validation), :mod:`napari_unet.evaluation`, :mod:`napari_unet.model` and
:mod:`napari_unet.common`. The CLI and the Train widget drive :func:`~.loop.train_iter`, which
calls the sub-packages below it, none of which calls back up: ``data`` (the pairs, their
targets and working size, the augmented batches) and ``finishing`` (post-processing tuned on
the validation images, the size model, the model card). :mod:`.augment` stays beside
:mod:`.config`, which holds its settings.
"""
