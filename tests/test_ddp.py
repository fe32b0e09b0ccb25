"""Data-parallel training: 2 processes on the CPU (gloo) through torchrun, a tiny network.

The reference is the same command in one process: with the same seed and global batch, the
weights after one step, and after an interrupted and resumed run, are the single-process ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tifffile
import torch
from safetensors.torch import load_file

from napari_unet.cli import main
from napari_unet.model.files import read_card

TINY = [
    "--patch", "32", "--batch", "4", "--depth", "2", "--base-filters", "4", "--device", "cpu",
    "--seed", "5", "--quiet", "--no-batch-norm", "--threads", "1", "--no-tune",
]  # fmt: skip


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory) -> Path:
    """4 training and 1 validation pair: 64 x 64 crops of ``dsb2018_fluo`` with nuclei."""
    root = tmp_path_factory.mktemp("ddp_data")
    source = data_dir / "dsb2018_fluo"
    names = sorted(p.name for p in (source / "labels").glob("*.tif"))[:5]
    for i, name in enumerate(names):
        labels = tifffile.imread(source / "labels" / name)
        y, x = np.argwhere(labels > 0).mean(0).astype(int)
        y, x = np.clip([y - 32, x - 32], 0, np.array(labels.shape) - 64)
        prefix = "val_" if i == 4 else ""
        for kind, array in (("images", tifffile.imread(source / "images" / name)), ("labels", labels)):  # fmt: skip
            (root / f"{prefix}{kind}").mkdir(exist_ok=True)
            tifffile.imwrite(root / f"{prefix}{kind}" / f"c{i}.tif", array[y : y + 64, x : x + 64])
    return root


def _args(folders: Path, out: Path, *extra: str) -> list[str]:
    data = ["--images", str(folders / "images"), "--labels", str(folders / "labels")]
    val = ["--val-images", str(folders / "val_images"), "--val-labels", str(folders / "val_labels")]
    return ["train", *data, *val, "-o", str(out), *TINY, *extra]


def _torchrun(args: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    return subprocess.Popen(
        [*command, "-m", "napari_unet", *args], stderr=subprocess.PIPE, text=True
    )


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=key)


def test_one_step_on_two_processes_equals_one_process(folders, tmp_path):
    steps = ["--epochs", "1", "--steps-per-epoch", "1"]
    assert main(_args(folders, tmp_path / "one" / "m.safetensors", *steps)) == 0
    out = tmp_path / "two" / "m.safetensors"
    assert main([*_args(folders, out, *steps), "--nproc", "2"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.ckpt", "m.safetensors"]
    _assert_same_weights(tmp_path / "one" / "m.safetensors", out, atol=1e-5)
    card = read_card(out)
    assert card["provenance"]["world_size"] == 2
    assert read_card(tmp_path / "one" / "m.safetensors")["provenance"]["world_size"] == 1


def test_interrupted_two_process_run_resumes_to_the_one_process_result(folders, tmp_path):
    steps = ["--epochs", "4", "--steps-per-epoch", "3"]
    reference = tmp_path / "ref" / "m.safetensors"
    assert main(_args(folders, reference, *steps)) == 0
    out = tmp_path / "ddp" / "m.safetensors"
    ckpt = out.with_suffix(".ckpt")
    run = _torchrun(_args(folders, out, *steps))
    deadline = time.monotonic() + 120
    while not ckpt.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the first checkpoint: the end of epoch 1
    ranks = psutil.Process(run.pid).children(recursive=True)
    for rank in ranks:
        os.kill(rank.pid, signal.SIGTERM)  # as a batch system's time limit would
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "stopped early" in err  # rank 0 speaks; the other rank is silent
    assert err.count("stopped early") == 1
    interrupted = read_card(out)["provenance"]["epochs_trained"]
    assert 1 <= interrupted < 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.ckpt", "m.safetensors"]
    resumed = _torchrun([*_args(folders, out, *steps), "--resume", str(ckpt)])
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert read_card(out)["provenance"]["epochs_trained"] == 4
    _assert_same_weights(reference, out, atol=1e-4)
