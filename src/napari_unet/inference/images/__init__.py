"""The image as the network sees it: its axes, channel and colour, normalisation, and the
out-of-domain check.

:mod:`.axes` parses, guesses and walks the axes of an image; :mod:`.modality` decides the
channel, colour handling and inversion; :mod:`.stains` turns a stained slide's colour into
stain amounts (optical density, haematoxylin); :mod:`.normalize` applies the model
card's intensity normalisation; :mod:`.domain` reports the run and warns when the image is
unlike the model's training images.
"""
