"""What every job shares: errors, atomic file writes, progress generators, the device, the sample.

The bottom layer of the engine: modules here import only the standard library, numpy and
(lazily) torch, tifffile; never another napari_unet package. Everything else may import them.
"""
