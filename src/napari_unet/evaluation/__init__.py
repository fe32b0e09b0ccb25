"""Scoring a segmentation against ground truth: the seed's pixel metrics, instance matching
(precision, recall, F1, AP, panoptic quality), per-slice/frame tables, and folder evaluation.

Independent of the network: may import :mod:`napari_unet.common` only (numpy, scipy), so
metrics never pull in torch. ``napari_unet.metrics`` re-exports :mod:`.metrics`.
"""
