"""Segment on a dask.distributed cluster: a scheduler and two worker processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from dask.utils import key_split

from napari_unet import segment
from napari_unet.cli import main
from napari_unet.common.errors import UserInputError
from napari_unet.inference.clusters import cluster
from napari_unet.inference.pipeline import segment_iter


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as local,
        Client(local) as connected,
    ):
        connected.get_task_stream()  # installs the scheduler's task-stream plugin
        yield connected


@pytest.fixture
def nuclei_zarr(data_dir, tmp_path) -> Path:
    """A 300 x 300 mosaic of a DSB 2018 image as a zarr array of 200 x 200 chunks."""
    first = sorted((data_dir / "dsb2018_fluo" / "images").glob("*.tif"))[0]
    image = tifffile.imread(first)
    image = np.block([[image, image[:, ::-1]], [image[::-1], image]])[:300, :300]
    path = tmp_path / "nuclei.zarr"
    store = zarr.open_array(path, mode="w", shape=image.shape, chunks=(150, 150), dtype=image.dtype)
    store[:] = image
    return path


def test_cli_on_a_cluster_equals_in_process_and_uses_both_workers(client, nuclei_zarr, tmp_path):
    address = client.scheduler.address
    before = len(client.get_task_stream())
    out = tmp_path / "out"
    args = ["segment", str(nuclei_zarr), "-o", str(out), "--diameter", "none"]
    assert main([*args, "--scheduler", address]) == 0
    tasks = client.get_task_stream()[before:]
    labels = zarr.open_array(out / "nuclei_labels.zarr")[:]
    expected = segment(zarr.open_array(nuclei_zarr), diameter=None, engine="torch")
    assert labels.max() > 20  # objects, some crossing the 256 px chunk borders of the output
    np.testing.assert_array_equal(labels, np.asarray(expected))
    per_worker = Counter(task["worker"] for task in tasks)
    assert len(per_worker) == 2, per_worker
    # the network is prepared once and each tile predicted once, however many chunks use it
    kinds = Counter(key_split(task["key"]) for task in tasks)
    assert kinds["prepare"] == 1, kinds
    assert [p.name for p in out.iterdir()] == ["nuclei_labels.zarr"]  # no scratch left


def test_environment_variable_and_semantic_output(
    client, tiny_model, tiny_model_file, tmp_path, monkeypatch
):
    image = (np.random.default_rng(0).random((2, 300, 280)) * 255).astype(np.uint8)
    zarr.open_array(tmp_path / "t.zarr", mode="w", shape=image.shape, chunks=(1, 150, 150), dtype="u1")[:] = image  # fmt: skip
    monkeypatch.setenv(cluster.ENV_VAR, client.scheduler.address)
    args = ["segment", str(tmp_path / "t.zarr"), "-o", str(tmp_path / "o"), "--axes", "TYX"]
    assert main([*args, "--model", str(tiny_model_file), "--output", "semantic"]) == 0
    got = zarr.open_array(tmp_path / "o" / "t_labels.zarr")[:]
    expected = segment(
        image, tiny_model, axes="TYX", output="semantic", diameter=None, engine="torch"
    )
    np.testing.assert_array_equal(got, expected)


def test_numpy_input_with_probabilities_gives_numpy(client, tiny_model):
    image = np.random.default_rng(1).random((96, 80)).astype(np.float32)
    labels, probs = segment(image, tiny_model, client=client, return_probabilities=True)
    ref_labels, ref_probs = segment(image, tiny_model, return_probabilities=True, engine="torch")
    assert isinstance(labels, np.ndarray) and isinstance(probs, np.ndarray)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5)


def test_closing_the_run_cancels_and_leaves_no_output(client, tiny_model, tmp_path):
    image = np.random.default_rng(2).random((4, 300, 300)).astype(np.float32)
    out = tmp_path / "labels.zarr"
    gen = segment_iter(image, tiny_model, axes="TYX", out=out, client=client, diameter=None)
    event = next(gen)
    assert event.stage == "predict" and event.n_frames == 4
    gen.close()
    assert list(tmp_path.iterdir()) == []


def test_other_engines_are_refused_on_a_cluster(tiny_model):
    with pytest.raises(UserInputError, match="workers run the network with torch"):
        segment(np.zeros((64, 64), np.float32), tiny_model, client="tcp://x:1", engine="openvino")


def test_unreachable_scheduler_is_a_clear_error(tiny_model, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    # refused at once, or (on a loaded machine) accepted by the system and never answered
    with pytest.raises(
        UserInputError, match=r"cannot reach the dask scheduler at|did not answer as a dask"
    ):
        segment(np.zeros((64, 64), np.float32), tiny_model, client="tcp://127.0.0.1:9")


class _FakeClient:
    """Answers ``run`` as workers would: per worker, a value or the exception raised."""

    def __init__(self, answers):
        self.answers, self.scheduler = answers, type("S", (), {"address": "tcp://x:8786"})()

    def wait_for_workers(self, n, timeout):
        if not self.answers:
            raise TimeoutError

    def run(self, function, *args, on_error="raise"):
        return dict(self.answers)


def test_worker_without_the_package_is_a_clear_error():
    fake = _FakeClient({"tcp://a:1": "1.0", "tcp://b:1": ModuleNotFoundError("napari_unet")})
    with pytest.raises(UserInputError, match="1 of 2 dask workers cannot import napari-unet"):
        cluster.check_workers(fake)
    with pytest.raises(UserInputError, match="has no workers"):
        cluster.check_workers(_FakeClient({}))


def test_output_folder_not_seen_by_a_worker_is_a_clear_error(tmp_path):
    fake = _FakeClient({"tcp://a:1": True, "tcp://b:1": False})
    with pytest.raises(UserInputError, match="not visible from 1 of 2 dask workers"):
        cluster.check_shared(fake, tmp_path)
    assert list(tmp_path.iterdir()) == []  # the marker file is gone


def test_segment_widget_runs_on_the_scheduler_it_is_given(
    make_napari_viewer, qtbot, client, tiny_model, tiny_model_file
):
    from napari_unet._napari.segment.segment_widget import FROM_FILE, SegmentWidget

    image = (np.random.default_rng(3).random((90, 70)) * 255).astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    widget = SegmentWidget(viewer)
    widget.model_source.value = FROM_FILE
    widget.model_file.value = tiny_model_file
    widget.output.value = "semantic"
    widget.scheduler.value = client.scheduler.address
    before = len(client.get_task_stream())
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert len(client.get_task_stream()) > before  # it ran on the cluster
    expected = segment(image, tiny_model, output="semantic", engine="torch")
    np.testing.assert_array_equal(viewer.layers["img labels"].data, expected)


# -- addresses that are not a scheduler's: one line, exit 2, no hang --------------------------


@pytest.fixture
def tcp_server():
    """Start TCP servers on 127.0.0.1 that accept and then write ``answer`` (None: nothing)."""
    import socket
    import threading

    servers, connections = [], []

    def start(answer: bytes | None) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:  # closed at the end of the test
                    return
                connections.append(conn)  # kept open: the other side is never told "closed"
                if answer is not None:
                    with contextlib.suppress(OSError):
                        conn.sendall(answer)

        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{server.getsockname()[1]}"

    yield start
    for sock in servers + connections:
        sock.close()


_GARBAGE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + bytes(range(256)) * 8


@pytest.mark.parametrize(
    ("where", "address", "needle"),
    [
        ("option", "not an address", "is not a dask scheduler address (missing port number"),
        ("option", "tcp://host:port:x", "is not a dask scheduler address"),
        ("environment", "garbage!!", "DASK_SCHEDULER_ADDRESS='garbage!!' is not a dask"),
        ("option", "silent", "did not answer as a dask scheduler within 10 s"),
        ("environment", "silent", "DASK_SCHEDULER_ADDRESS="),
        ("option", "garbage", "does not speak the dask protocol"),
    ],
)
def test_a_scheduler_address_that_is_not_one_is_a_line_not_a_hang(
    tcp_server, tiny_model_file, tmp_path, where, address, needle
):
    import os
    import subprocess
    import sys
    import threading
    import time

    if address in ("silent", "garbage"):
        address = tcp_server(None if address == "silent" else _GARBAGE)
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    argv = ["segment", str(image), "-o", str(tmp_path / "out"), "--model", str(tiny_model_file)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop(cluster.ENV_VAR, None)
    if where == "environment":
        env[cluster.ENV_VAR] = address
    else:
        argv += ["--scheduler", address]
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_unet", *argv], env=env, stderr=subprocess.PIPE, text=True
    )
    lines: list[tuple[float, str]] = []

    def read():
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=90)  # the servers never close a connection: a hang ends here
    finally:
        proc.kill()
    ended = time.monotonic()
    reader.join(5)
    err = "\n".join(text for _, text in lines)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    errors = [text for _, text in lines if text.startswith("napari-unet")]
    assert len(errors) == 1 and errors[0].startswith("napari-unet segment: error: "), err
    assert needle in errors[0], errors[0]
    started = next(t for t, text in lines if text.startswith("computing on the dask cluster"))
    # the connection and the answer within CONNECT_TIMEOUT, then out (no 20 s wait in a
    # half-made Client's __del__)
    assert ended - started < cluster.CONNECT_TIMEOUT + 4, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_dask_worker_is_not_taken_for_the_scheduler(client):
    client.wait_for_workers(1, timeout=60)  # a loaded machine may not have registered them yet
    worker = next(iter(client.scheduler_info()["workers"]))
    with pytest.raises(UserInputError, match="is a dask Worker, not the scheduler"):
        cluster.probe_scheduler(worker)
    assert cluster.probe_scheduler(client.scheduler.address)["type"] == "Scheduler"
