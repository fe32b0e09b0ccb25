"""The network and its files: the U-Net, its config and summary, receptive field, the fast
inference copy (batch norm folded, channels-last), and the safe ``.safetensors`` model file
with its card.

May import :mod:`napari_unet.common` only. Inference, training and the faces build on it.
"""
