"""Scaling out: Segment on a local 2-worker dask cluster vs in-process; DDP training 2 vs 1.

``segment``: a ``--size`` x ``--size`` zarr image (tiles of a DSB 2018 image, 1024 px chunks)
segmented in this process (2 torch threads) and on a ``LocalCluster`` of 2 worker processes
(1 thread each, as dask sets for its workers), both written to zarr; prints the times, their
ratio, whether the labels are equal, and the tasks the cluster ran, by kind and by worker.

``train``: samples/s of the training loop (``train_iter``, tiny synthetic data set, 128 px
patches, global batch 8, base-16 depth-4 U-Net, no augmentation) in one process with 1 and 2
threads, and in 2 processes of 1 thread each through torchrun (gloo), each a fresh process;
the first 2 steps are warm-up.

Run: ``python benchmarks/bench_scale_out.py [segment|train|all] [--size 4096] [--steps 12]``.
The ratios are measured in one run; on a 2-core machine no speed-up is expected.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_fluo" / "images"


def make_zarr(path: Path, size: int):
    import tifffile
    import zarr

    tile = tifffile.imread(sorted(DATA.glob("*.tif"))[0])
    reps = -(-size // tile.shape[0]), -(-size // tile.shape[1])
    image = np.tile(tile, reps)[:size, :size]
    store = zarr.open_array(path, mode="w", shape=image.shape, chunks=(1024, 1024), dtype="u1")
    store[:] = image
    return store


def bench_segment(size: int) -> None:
    import torch
    import zarr
    from distributed import Client, LocalCluster

    from napari_unet import segment

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        image = make_zarr(Path(tmp) / "in.zarr", size)
        kwargs = {"diameter": None, "engine": "torch"}
        t0 = time.perf_counter()
        segment(image, out=Path(tmp) / "local.zarr", **kwargs)
        local = time.perf_counter() - t0
        with (
            LocalCluster(
                n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.get_task_stream()  # start recording
            client.run(lambda: __import__("napari_unet.model.unet"))  # warm the workers
            t0 = time.perf_counter()
            segment(image, out=Path(tmp) / "cluster.zarr", client=client, **kwargs)
            remote = time.perf_counter() - t0
            tasks = client.get_task_stream()
        a = zarr.open_array(Path(tmp) / "local.zarr")[:]
        b = zarr.open_array(Path(tmp) / "cluster.zarr")[:]
    from dask.utils import key_split

    kinds = Counter(key_split(t["key"]) for t in tasks)
    busy = sum(
        sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
        for t in tasks
    )
    print(f"segment {size}x{size}: in-process {local:.1f} s, 2-worker cluster {remote:.1f} s, "
          f"cluster/in-process time {remote / local:.2f}; labels equal: {np.array_equal(a, b)} "
          f"({int(a.max())} objects)")  # fmt: skip
    print(f"  tasks: {len(tasks)} ({busy:.1f} s of compute, {busy / max(len(tasks), 1) * 1e3:.1f} "
          f"ms per task on average); per worker: {sorted(Counter(t['worker'] for t in tasks).values())}")  # fmt: skip
    for kind, count in kinds.most_common():
        print(f"    {count:5d} {kind}")


def _train_worker(steps: int) -> None:
    """One process of the DDP measurement (or the lone process): prints samples/s on rank 0."""
    import torch

    from napari_unet.training.augment import AugmentConfig
    from napari_unet.training.config import TrainConfig
    from napari_unet.training.data.pairs import prepare_pair
    from napari_unet.training.events import BatchEnd
    from napari_unet.training.loop import train_iter

    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(3):
        labels = np.zeros((256, 256), np.int32)
        for i, (y, x) in enumerate(rng.integers(10, 246, size=(40, 2)), start=1):
            labels[max(y - 6, 0) : y + 6, max(x - 6, 0) : x + 6] = i
        image = (labels > 0) * 100 + rng.normal(20, 5, labels.shape)
        pairs.append(prepare_pair(image.astype(np.float32), labels))
    config = TrainConfig(
        epochs=1, steps_per_epoch=steps, batch_size=8, patch_size=128, base_filters=16,
        depth=4, device="cpu", augment=AugmentConfig.none(), tune_postprocessing=False,
    )  # fmt: skip
    times = []
    gen = train_iter(pairs[:2], pairs[2:], config)
    for event in gen:
        if isinstance(event, BatchEnd):
            times.append(time.perf_counter())
    if int(os.environ.get("RANK", "0")) == 0:
        rate = config.batch_size * (len(times) - 3) / (times[-1] - times[2])
        print(json.dumps({"samples_per_s": rate, "threads": torch.get_num_threads()}))


def _run(command: list[str], env: dict) -> float:
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["samples_per_s"]


def bench_train(steps: int) -> None:
    me = [str(Path(__file__).resolve()), "train-worker", "--steps", str(steps)]
    env = dict(os.environ)
    one = _run([sys.executable, *me], {**env, "OMP_NUM_THREADS": "1"})
    two_threads = _run([sys.executable, *me], {**env, "OMP_NUM_THREADS": "2"})
    ddp = _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *me],
        {**env, "OMP_NUM_THREADS": "1"},
    )
    print(f"train (global batch 8, 128 px, base 16, {steps} steps): samples/s 1 process x 1 "
          f"thread {one:.2f}, 1 x 2 threads {two_threads:.2f}, 2 processes x 1 thread (DDP) "
          f"{ddp:.2f}; DDP / 1x1 {ddp / one:.2f}, DDP / 1x2 {ddp / two_threads:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("segment", "train", "all", "train-worker"), nargs="?",
                        default="all")  # fmt: skip
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    if args.what == "train-worker":
        _train_worker(args.steps)
        return
    if args.what in ("segment", "all"):
        bench_segment(args.size)
    if args.what in ("train", "all"):
        bench_train(args.steps)


if __name__ == "__main__":
    main()
