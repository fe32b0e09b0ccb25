"""A segmentation on a dask.distributed cluster.

:mod:`.cluster` connects to the scheduler and checks the workers and the shared folder,
:mod:`.cluster_job` runs a :class:`~napari_unet.inference.frames.SegmentJob`'s frames as
tasks into zarr stores, and :mod:`.cluster_postprocess` computes the labels one task per
chunk, equal to the in-process ones.
"""
