"""The CLI against a cluster started the way a user starts one: `dask scheduler`, `dask worker`.

The in-process ``LocalCluster`` of ``test_cluster.py`` makes its client the default one; a
scheduler started by the dask CLI has none in the napari-unet process (issue 28: ``ValueError:
No clients found`` from ``distributed.as_completed``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet import segment

BIN = Path(sys.executable).parent
SRC = Path(__file__).resolve().parents[1] / "src"


def _start(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    out = subprocess.DEVNULL
    return subprocess.Popen([str(BIN / "dask"), *args], env=env, cwd=cwd, stdout=out, stderr=out)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """``dask scheduler`` and one ``dask worker`` on 127.0.0.1, as subprocesses."""
    root = tmp_path_factory.mktemp("dask")
    info = root / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(SRC), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(info)], env, root)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        procs.append(_start(["worker", address, "--nthreads", "1", "--nworkers", "1",
                             "--no-dashboard", "--host", "127.0.0.1"], env, root))  # fmt: skip
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_cli_on_a_scheduler_started_with_the_dask_cli(scheduler, data_dir, tmp_path):
    first = sorted((data_dir / "dsb2018_fluo" / "images").glob("*.tif"))[0]
    image = tifffile.imread(first)[:200, :200]
    source = tmp_path / "nuclei.zarr"
    store = zarr.open_array(source, mode="w", shape=image.shape, chunks=(100, 100), dtype="u1")
    store[:] = image
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = ["segment", str(source), "-o", str(out), "--diameter", "none", "--scheduler", scheduler]
    command = [sys.executable, "-m", "napari_unet", *args]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    labels = zarr.open_array(out / "nuclei_labels.zarr", mode="r")[:]
    expected = segment(image, diameter=None, engine="torch")
    assert labels.max() > 5
    np.testing.assert_array_equal(labels > 0, np.asarray(expected) > 0)
