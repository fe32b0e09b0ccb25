"""Training a U-Net: data and patch sampling, augmentation, targets (classes and border
weights), batches, losses, the validated config, the loop, checkpoints for exact resume, and
the model card a run writes.

May import :mod:`napari_unet.inference` (normalisation, post-processing, tiled prediction for
validation), :mod:`napari_unet.evaluation`, :mod:`napari_unet.model` and
:mod:`napari_unet.common`. The CLI and the Train widget drive :func:`~.loop.train_iter`.
"""
