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


# -- options that cannot work are refused before torchrun starts anything ---------------------


@pytest.mark.parametrize(
    ("nproc", "batch", "needle"),
    [
        ("2", "3", "--batch 3 is not a multiple of --nproc 2: each process trains on an equal "
         "share of every batch (--batch 2 or 4)"),
        ("2", "1", "--batch 1 is not a multiple of --nproc 2: each process trains on an equal "
         "share of every batch (--batch 2)"),
        ("1000", "8", "--nproc 1000 is more than this machine's"),  # not "--batch 1000"
        ("1000", "1000", "--nproc 1000 is more than this machine's"),
    ],
)  # fmt: skip
def test_impossible_process_options_are_refused_before_the_launch(
    tmp_path, monkeypatch, capsys, nproc, batch, needle
):
    from napari_unet.cli import train as train_cli

    def launch(args):
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(train_cli, "_launch", launch)
    argv = ["train", "--images", str(tmp_path / "i"), "--labels", str(tmp_path / "l")]
    argv += ["-o", str(tmp_path / "m.safetensors"), "--device", "cpu"]
    assert main([*argv, "--nproc", nproc, "--batch", batch]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("napari-unet train: error: "), err
    assert needle in err
    assert list(tmp_path.iterdir()) == []


def test_the_process_limit_follows_the_machine(monkeypatch):
    from napari_unet.common.errors import UserInputError
    from napari_unet.training import ddp

    cpu = torch.device("cpu")
    monkeypatch.setattr(ddp.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert ddp.process_limit(cpu) == (6, "CPU cores")
    ddp.check_world(6, 12, cpu)  # six processes of two samples: fine
    with pytest.raises(UserInputError, match="more than this machine's 6 CPU cores"):
        ddp.check_world(8, 16, cpu)
    monkeypatch.setattr(ddp.os, "sched_getaffinity", lambda pid: set(range(500)), raising=False)
    assert ddp.process_limit(cpu)[0] == ddp.MAX_PROCESSES
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert ddp.process_limit(torch.device("cuda")) == (2, "GPUs")
    with pytest.raises(UserInputError, match="one process per GPU"):
        ddp.check_world(4, 8, torch.device("cuda"))
    with pytest.raises(UserInputError, match="not on mps"):
        ddp.check_world(2, 4, torch.device("mps"))


def test_a_failing_rank_is_one_line_without_torchruns_traceback(folders, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    for path in (folders / "labels").glob("*.tif"):  # found by the ranks, not before
        tifffile.imwrite(labels / path.name, tifffile.imread(path).astype(np.int32) - 1)
    argv = ["train", "--images", str(folders / "images"), "--labels", str(labels)]
    argv += ["-o", str(tmp_path / "m.safetensors"), *TINY, "--epochs", "1", "--nproc", "2"]
    run = subprocess.run(
        [sys.executable, "-m", "napari_unet", *argv], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("launching 2 training processes: torchrun --standalone")
    assert len(lines) == 2, run.stderr  # the launch, then rank 0's one line
    assert "negative label ids" in lines[1] and lines[1].startswith("napari-unet train: error:")
    assert "Traceback" not in run.stderr and "ChildFailedError" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_the_terminal_stops_or_aborts_all_ranks(folders, tmp_path, presses):
    """As from a terminal: SIGINT to the launcher's process group (the ranks run in sessions
    of their own; torchrun's wrapper passes each Ctrl-C on to them)."""
    import threading

    out = tmp_path / "m.safetensors"
    argv = [*_args(folders, out, "--epochs", "500", "--steps-per-epoch", "2"), "--nproc", "2"]
    run = subprocess.Popen(
        [sys.executable, "-m", "napari_unet", *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not out.with_suffix(".ckpt").exists() and run.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGINT)
    while presses == 2 and not any("press Ctrl-C again" in ln for ln in lines):
        assert run.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.02)
    if presses == 2:
        os.killpg(run.pid, signal.SIGINT)
    run.wait(timeout=120)
    reader.join(10)
    err = "".join(lines)
    assert "Traceback" not in err and "ChildFailedError" not in err, err
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])
    ]  # no rank left running
    if presses == 1:  # stopped after the batch on every rank; rank 0 saved the best model
        assert run.returncode == 0, err
        assert err.count("stopped early") == 1 and read_card(out)["provenance"]["world_size"] == 2
    else:
        assert run.returncode == 130, err
        assert err.strip().splitlines()[-1].startswith("napari-unet train: interrupted")
        assert err.count("interrupted") == 1 and not out.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_peer_lost_after_ctrl_c_is_the_same_abort(tmp_path):
    """The second Ctrl-C aborts one rank first; the other, waiting on it in a collective, gets
    a gloo error. After a Ctrl-C that is the abort (exit 130), not an internal error; before
    one, or for any other error, the error goes on."""
    import threading

    from napari_unet.cli.train import _graceful_stop
    from napari_unet.training.ddp import is_peer_lost

    gloo = RuntimeError(
        "[third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"
    )
    assert is_peer_lost(gloo) and is_peer_lost(torch.distributed.DistNetworkError("x"))
    assert not is_peer_lost(RuntimeError("shape mismatch")) and not is_peer_lost(ValueError("gloo"))

    stop = threading.Event()
    with pytest.raises(RuntimeError):  # no Ctrl-C yet: a real failure
        with _graceful_stop(stop, tmp_path / "m.ckpt"):
            raise gloo
    with pytest.raises(KeyboardInterrupt):
        with _graceful_stop(stop, tmp_path / "m.ckpt"):
            signal.raise_signal(signal.SIGINT)  # the first press: stop after this batch
            assert stop.is_set()
            raise gloo
    with pytest.raises(RuntimeError, match="shape"):
        with _graceful_stop(stop, tmp_path / "m.ckpt"):
            signal.raise_signal(signal.SIGINT)
            raise RuntimeError("shape mismatch")
