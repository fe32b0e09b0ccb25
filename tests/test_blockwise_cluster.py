"""Blockwise z_mode "3d" on a cluster started as a user starts one (`dask scheduler`,
`dask worker` subprocesses): the CLI writes the labels the in-process run gives."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import zarr

from napari_unet import segment
from synthetic3d import ellipsoid_stack
from test_cluster_cli import SRC, scheduler  # noqa: F401  (the dask CLI cluster fixture)


def test_cli_blocks_on_a_dask_cli_cluster_equal_in_process(scheduler, tmp_path):  # noqa: F811
    image, _ = ellipsoid_stack((16, 48, 48), 2.0, seed=2)
    image = np.clip(image * 1000 + 100, 0, 65535).astype(np.uint16)
    source = tmp_path / "stack.zarr"
    store = zarr.open_array(source, mode="w", shape=image.shape, chunks=(8, 24, 24), dtype="u2")
    store[:] = image
    out = tmp_path / "out"
    args = ["segment", str(source), "-o", str(out), "--axes", "ZYX", "--anisotropy", "2"]
    args += ["--diameter", "none", "--block", "8", "24", "24", "--scheduler", scheduler]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "napari_unet", *args]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    labels = zarr.open_array(out / "stack_labels.zarr", mode="r")[:]
    expected = segment(
        image, axes="ZYX", anisotropy=2.0, diameter=None, block=(8, 24, 24), engine="torch"
    )
    assert labels.max() >= 5  # 3D nuclei, many cut by the 2 x 2 x 2 blocks
    np.testing.assert_array_equal(labels, expected)
