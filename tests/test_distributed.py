"""Tiled inference on a dask.distributed cluster of two worker processes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import torch
from distributed import Client, LocalCluster

from napari_unet.inference.tiling.predict import predict_tiled, predict_tiled_dask
from napari_unet.model.unet import UNet


def test_distributed_run_matches_in_process():
    torch.manual_seed(0)
    net = UNet(1, 3, depth=2, base_filters=4).eval()
    image = np.random.default_rng(0).normal(size=(1, 90, 120)).astype(np.float32)
    lazy_image = da.from_array(image, chunks=(1, 48, 64))
    lazy = predict_tiled_dask(net, lazy_image, tile_shape=48, overlap=16, device="cpu")
    in_process = lazy.compute(scheduler="synchronous")
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        distributed = client.compute(lazy).result()
        workers = client.run(lambda: 1)
    assert len(workers) == 2
    np.testing.assert_allclose(distributed, in_process, atol=1e-6)
    streamed = predict_tiled(net, image, tile_shape=48, overlap=16, device="cpu")
    np.testing.assert_allclose(distributed, streamed, atol=1e-6)
    assert np.array_equal(distributed.argmax(0), streamed.argmax(0))
