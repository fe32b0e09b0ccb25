"""The end of a training run: what the model file carries besides the weights.

:mod:`.tune` chooses the instance post-processing on the validation images, :mod:`.size_fit`
fits the model's object-size estimate, and :mod:`.card` writes the model card (task, classes,
input, normalisation, provenance, metrics) that both go into.
"""
