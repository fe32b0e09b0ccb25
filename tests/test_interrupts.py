"""Interrupted and killed runs leave either the old state or nothing, and the next run tidies up.

Each test starts ``python -m napari_unet`` in a subprocess (with its own ``TMPDIR``), waits
until the run is writing (its temporary appears), then sends SIGINT (Ctrl-C) or SIGKILL and
checks the folders. What is checked holds whenever the signal lands.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet import load_model, save_model
from napari_unet.cli import main
from napari_unet.model.unet import UNet

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("interrupts")
    return save_model(UNet(1, 3, depth=1, base_filters=2), root / "tiny.safetensors")


def _start(args: list[str], tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(SRC)}
    tmp.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "napari_unet", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )


def _as_from_a_terminal() -> None:
    """The child starts with Ctrl-C and SIGTERM at their defaults, as from a shell: a child
    inherits an ignored signal, and Python then never turns SIGINT into KeyboardInterrupt (in
    the full suite something in this process had left SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _wait_for(proc: subprocess.Popen, found, timeout: float = 90) -> None:
    """Wait until ``found()`` holds while ``proc`` runs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if found():
            return
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before it was interrupted:\n{err}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the run never started writing")


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def _zarr_input(path: Path, frames: int) -> None:
    rng = np.random.default_rng(0)
    z = zarr.open_array(str(path), mode="w", shape=(frames, 64, 64), chunks=(1, 64, 64), dtype="u1")
    z[:] = rng.integers(0, 255, (frames, 64, 64), dtype=np.uint8)


def _segment_args(image: Path, out: Path, model: Path) -> list[str]:
    return ["segment", str(image), "-o", str(out), "--model", str(model), "--axes", "TYX",
            "--diameter", "none"]  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL, signal.SIGTERM])
def test_zarr_output_interrupted_or_killed(tiny_file, tmp_path, sig):
    image, out, tmp = tmp_path / "x.zarr", tmp_path / "out", tmp_path / "tmp"
    _zarr_input(image, frames=400)
    proc = _start(_segment_args(image, out, tiny_file), tmp)
    _wait_for(proc, lambda: out.is_dir() and _temporaries(out))
    time.sleep(0.3)  # some chunks written
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    target = out / "x_labels.zarr"
    assert not target.exists()  # never a half-written store under the final name
    assert "Traceback" not in err
    if sig == signal.SIGKILL:
        assert _temporaries(out)  # left behind by the kill ...
        # ... and removed by the next run that writes this output (a quick one)
        small = tmp_path / "small" / "x.zarr"
        small.parent.mkdir()
        _zarr_input(small, frames=2)
        assert main(_segment_args(small, out, tiny_file)) == 0
        assert zarr.open_array(str(target), mode="r").shape == (2, 64, 64)
        # the killed run's probability store in the temporary folder goes on a later run
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(SRC)}
        again = subprocess.run(
            [sys.executable, "-m", "napari_unet", *_segment_args(small, out, tiny_file),
             "--overwrite"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
    else:
        assert proc.returncode == 130, err
        assert "interrupted" in err.strip().splitlines()[-1]
    assert _temporaries(out) == []
    assert [p.name for p in tmp.iterdir() if p.name.startswith("napari-unet")] == []


def test_tiff_output_interrupted(tiny_file, tmp_path):
    image, out, tmp = tmp_path / "x.tif", tmp_path / "out", tmp_path / "tmp"
    rng = np.random.default_rng(0)
    tifffile.imwrite(image, rng.integers(0, 255, (1500, 64, 64), dtype=np.uint8))
    args = ["segment", str(image), "-o", str(out), "--model", str(tiny_file), "--axes", "TYX"]
    proc = _start([*args, "--diameter", "none"], tmp)
    _wait_for(proc, out.is_dir)  # checked and created before the model is loaded
    time.sleep(1.5)  # segmenting
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not (out / "x_labels.tif").exists()
    assert not out.exists() or list(out.iterdir()) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_tiff_temporaries_are_removed_and_live_ones_reported(
    tiny_file, tmp_path, capsys, caplog
):
    out = tmp_path / "out"
    out.mkdir()
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    old_style = out / ".a_labels.tif.k3j9x_2q.tmp"  # written by earlier versions
    dead = out / f".a_labels.tif.{_dead_pid()}-1f2e3d4c.tmp"
    other = out / ".b_labels.tif.1-aaaa.tmp"  # another output's: not ours to touch
    for path in (old_style, dead, other):
        path.write_bytes(b"half a tiff")
    args = ["segment", str(image), "-o", str(out), "--model", str(tiny_file)]
    assert main(args) == 0
    assert not old_style.exists() and not dead.exists() and other.exists()
    assert "left over from an interrupted run" in caplog.text
    live = out / f".a_labels.tif.{os.getpid()}-5e6f7a8b.tmp"  # this process: alive
    live.write_bytes(b"being written")
    assert main([*args, "--overwrite"]) == 2
    assert "being written by another running process" in capsys.readouterr().err
    assert live.exists()


def _training_folders(root: Path) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(2):
        lab = np.zeros((48, 48), np.uint16)
        for j, (y, x) in enumerate(rng.integers(2, 38, (5, 2)), start=1):
            lab[y : y + 8, x : x + 8] = j
        tifffile.imwrite(images / f"{i}.tif", ((lab > 0) * 200 + rng.normal(20, 5, lab.shape)))
        tifffile.imwrite(labels / f"{i}.tif", lab)
    return images, labels


TRAIN = ["--steps-per-epoch", "2", "--patch", "32", "--batch", "1", "--depth", "1",
         "--base-filters", "2", "--device", "cpu", "--quiet", "--val-fraction", "0",
         "--no-tune"]  # fmt: skip


def _train_args(images: Path, labels: Path, model: Path, *extra: str) -> list[str]:
    args = ["train", "--images", str(images), "--labels", str(labels), "-o", str(model)]
    return [*args, *TRAIN, *extra]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_training_interrupted_or_killed(tmp_path, sig):
    images, labels = _training_folders(tmp_path / "data")
    out = tmp_path / "run"
    model, ckpt = out / "m.safetensors", out / "m.ckpt"
    proc = _start((_train_args(images, labels, model, "--epochs", "500")), tmp_path / "t")
    _wait_for(proc, ckpt.is_file)
    time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    if sig == signal.SIGINT:  # the first Ctrl-C stops after the batch and keeps the best model
        assert proc.returncode == 0, err
        assert "continue with --resume" in err
        assert load_model(model).card["metrics"] is not None
    else:
        assert not model.exists()  # the model file is written only at the end
    assert ckpt.is_file()
    for leftover in _temporaries(out):  # a kill during a checkpoint write: removed next time
        assert sig == signal.SIGKILL, leftover
    stale = out / f".m.ckpt.{_dead_pid()}-0badc0de.tmp"
    stale.write_bytes(b"half a checkpoint")
    # the run continues from its checkpoint; a fresh run without --resume is refused
    assert main(_train_args(images, labels, model, "--epochs", "1")) == 2
    position = json.loads(torch.load(ckpt, weights_only=True)["position"])
    more = str(position["epoch"] + 1)
    assert main([*_train_args(images, labels, model, "--epochs", more), "--resume", str(ckpt)]) == 0
    assert not stale.exists()
    assert load_model(model).card["provenance"]["training"]["epochs"] == int(more)
    assert _temporaries(out) == []


class _Lines:
    """The stderr lines of a running process, read as they come."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def text(self) -> str:
        self._thread.join(10)
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def nuclei_folders(data_dir, tmp_path_factory) -> tuple[Path, Path]:
    """6 pairs of 128 x 128 crops of real nuclei: the end-of-run tuning and size fit take s."""
    root = tmp_path_factory.mktemp("finishing")
    source = data_dir / "dsb2018_fluo"
    for kind in ("images", "labels"):
        (root / kind).mkdir()
        for path in sorted((source / kind).glob("*.tif"))[:6]:
            tifffile.imwrite(root / kind / path.name, tifffile.imread(path)[:128, :128])
    return root / "images", root / "labels"


@pytest.mark.parametrize("moment", ["right after the first", "during the size fit"])
def test_a_second_ctrl_c_aborts_the_finishing_run(nuclei_folders, tmp_path, moment):
    images, labels = nuclei_folders
    model, ckpt = tmp_path / "run" / "m.safetensors", tmp_path / "run" / "m.ckpt"
    args = [
        "train",
        "--images",
        str(images),
        "--labels",
        str(labels),
        "-o",
        str(model),
        "--epochs",
        "500",
        "--steps-per-epoch",
        "2",
        "--patch",
        "64",
        "--batch",
        "2",
        "--depth",
        "2",
        "--base-filters",
        "4",
        "--device",
        "cpu",
        "--quiet",
        "--val-fraction",
        "0.5",
    ]  # fmt: skip  (post-processing tuning and size fit on)
    proc = _start(args, tmp_path / "t")
    err = _Lines(proc)
    _wait_for(proc, ckpt.is_file, timeout=180)
    proc.send_signal(signal.SIGINT)  # stop after this batch, then tune and fit: the finishing
    _wait_for(proc, lambda: err.has("press Ctrl-C again to abort"))
    if moment == "during the size fit":  # the tuning is done, the size fit takes seconds
        _wait_for(proc, lambda: err.has("post-processing chosen on"))
    proc.send_signal(signal.SIGINT)  # well within the 2 s that were once taken for an echo
    proc.wait(timeout=120)
    text = err.text()
    assert proc.returncode == 130, text
    assert "interrupted" in text.splitlines()[-1] and "Traceback" not in text
    assert "stopped early" not in text and "saved" not in text
    assert not model.exists()  # the model file is never written by an aborted run
    assert "position" in torch.load(ckpt, weights_only=True)  # the checkpoint is whole
    assert _temporaries(model.parent) == []


def test_an_interrupted_command_removes_its_own_scratch_folders_only(tmp_path, monkeypatch):
    """A scratch folder caught by the interrupt while being made or removed goes with the run;
    another process's, or another program's, stays."""
    from napari_unet.common.atomic import remove_own_temp_dirs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pid = os.getpid()
    ours = [tmp_path / f"napari-unet-seeds-{pid}-abc", tmp_path / f"napari-unet-{pid}-xyz"]
    theirs = [tmp_path / f"napari-unet-seeds-{pid + 1}-abc", tmp_path / f"other-{pid}-x"]
    for folder in ours + theirs:
        (folder / "0.0").mkdir(parents=True)
    assert sorted(remove_own_temp_dirs()) == sorted(ours)
    assert [f.exists() for f in ours + theirs] == [False, False, True, True]
