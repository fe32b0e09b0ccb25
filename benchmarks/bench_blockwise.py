"""Blockwise z_mode "3d" on zarr volumes: time and peak memory for three sizes (not a test).

Usage (from the repository root)::

    python benchmarks/bench_blockwise.py [--sizes 32x256x256 64x256x256 64x512x512]
        [--block Z Y X] [--anisotropy 2] [--threads 2] [--engine auto]
        [--scheduler ADDRESS] [--workdir DIR] [--stop-after SECONDS]

For each size a synthetic uint16 volume of textured ellipsoidal nuclei (``tests/synthetic3d.py``,
a 32 x 256 x 256 stack mirrored across the volume, so nuclei continue over the tile seams) is
written to a zarr store chunk by chunk, then segmented by the built-in model with
``z_mode="3d"`` in a fresh process (``segment(zarr, block=..., out=...)``, ``diameter=None``),
which reports its wall time and its peak resident memory (``resource.getrusage``). Prints one
line per size and a ``RESULT`` line: seconds per million voxels (linear time: about constant
over the sizes) and the largest peak RSS. ``--scheduler`` passes the address as ``client=``:
each block is then one task on the cluster's workers, and this process writes and joins them.

The issue's run (256 x 2048 x 2048, ~2 GB of uint16, peak RSS < 3 GB) takes hours on a laptop
CPU: ``--sizes 64x2048x2048 128x2048x2048 256x2048x2048 --block 256 144 144`` (windows of
about 2 GB by the 65 bytes per voxel estimate, 6x the voxels read: the receptive field of 107
px around 144 px cores), on a machine with time to spare; without ``--block`` the blocks are
sized from half the free memory (at most 8 GB: 256 x 507 x 507 cores, 1.9x read).
``--stop-after S`` samples such a run: it stops at the first block that ends after S seconds
and prints the blocks' times, the peak RSS after each block and the pace's projection.

With ``--workdir DIR`` the volumes and the runs' work stay in ``DIR``: a run stopped by
``--stop-after`` (or killed) keeps its finished blocks (``segment``'s resumable zarr runs),
and the same command again resumes it. Each run records its time and peak RSS after every
block in ``DIR/<size>/runs/``; the line of a finished size sums the seconds of all its runs
and gives the largest peak of any.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TILE = (32, 256, 256)


def _shape(text: str) -> tuple[int, int, int]:
    values = tuple(int(v) for v in text.lower().split("x"))
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected ZxYxX, got {text!r}")
    return values  # type: ignore[return-value]


def write_volume(path: Path, shape, anisotropy: float, seed: int = 0) -> None:
    """A uint16 zarr volume of ``shape``: one synthetic stack tile, mirrored across it."""
    import zarr

    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic3d import ellipsoid_stack

    tile = tuple(min(t, n) for t, n in zip(TILE, shape))
    image, _ = ellipsoid_stack(tile, anisotropy, seed=seed)
    base = np.clip(image * 2000 + 200, 0, 65535).astype(np.uint16)
    chunks = (min(16, shape[0]), min(256, shape[1]), min(256, shape[2]))
    store = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype="uint16")
    grid = [range(math.ceil(n / t)) for n, t in zip(shape, tile)]
    for i in grid[0]:
        for j in grid[1]:
            for k in grid[2]:
                flipped = base[:: (-1) ** i, :: (-1) ** j, :: (-1) ** k]
                lo = (i * tile[0], j * tile[1], k * tile[2])
                hi = tuple(min(a + t, n) for a, t, n in zip(lo, tile, shape))
                part = flipped[tuple(slice(0, h - a) for a, h in zip(lo, hi))]
                store[tuple(slice(a, h) for a, h in zip(lo, hi))] = part


def _child(args: argparse.Namespace) -> None:
    """Segment the zarr volume ``args.child``; print a JSON line."""
    import torch
    import zarr

    from napari_unet import segment
    from napari_unet.inference.pipeline import builtin_model
    from napari_unet.inference.volumes.blockwise import plan_blocks
    from napari_unet.inference.volumes.blockwise.plan import (
        block_halo,
        default_block,
        pooling_align,
    )
    from napari_unet.inference.volumes.blockwise.resume import ledger_path

    torch.set_num_threads(args.threads)
    volume = zarr.open_array(args.child, mode="r")
    out = Path(args.child).with_name("labels.zarr")
    resumed = len(list((ledger_path(out) / "blocks").glob("f*.npz")))
    log = Path(args.child).with_name("runs") / f"{int(time.time())}-{os.getpid()}.json"
    log.parent.mkdir(exist_ok=True)
    model = builtin_model("nuclei")
    halo = block_halo(model, args.anisotropy)  # the plan segment() makes, to report it
    block = tuple(args.block or default_block(volume.shape, halo, args.anisotropy, volume.chunks))
    plan = plan_blocks(volume.shape, block, halo, pooling_align(model, args.anisotropy))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    finished: list[tuple[float, float]] = []  # (seconds, peak RSS in MB) as each block ends

    def watch(event) -> None:
        if event.stage == "postprocess" and event.total == len(plan.blocks):
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            finished.append((time.perf_counter() - start, peak))
            _note_run(log, finished[-1][0], peak, resumed, len(finished), event.done)
            if args.stop_after and finished[-1][0] > args.stop_after:
                raise _Stopped

    try:
        labels = _segment_volume(segment, volume, model, block, args, watch)
    except _Stopped:
        seconds = time.perf_counter() - start
        per_block = [b - a for (a, _), (b, _) in zip([(0.0, 0.0), *finished], finished)]
        print(
            json.dumps(
                {
                    "shape": list(volume.shape),
                    "stopped_after_blocks": len(finished),
                    "resumed_blocks": resumed,
                    "blocks": len(plan.blocks),
                    "block": list(plan.block),
                    "halo": list(plan.halo),
                    "seconds": seconds,
                    "block_seconds": per_block,
                    "peak_mb_after_each_block": [p for _, p in finished],
                    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "before_mb": before / 1024,
                    "read_factor": sum(b.outer_voxels for b in plan.blocks)
                    / math.prod(volume.shape),
                }
            )
        )
        return
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _note_run(log, seconds, peak, resumed, len(finished), len(plan.blocks), complete=True)
    _report(labels, volume, plan, before, start, log.parent)


def _note_run(log: Path, seconds, peak_mb, resumed, blocks_here, done, complete=False) -> None:
    """This run's time and peak so far (rewritten after each block: a killed run counts too)."""
    record = {
        "seconds": seconds,
        "peak_mb": peak_mb,
        "resumed_blocks": resumed,
        "blocks_this_run": blocks_here,
        "blocks_done": done,
        "complete": complete,
    }
    tmp = log.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, log)


def _runs(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


class _Stopped(Exception):
    """--stop-after: the time is up (raised from the progress callback after a block)."""


def _segment_volume(segment, volume, model, block, args, watch):
    return segment(
        volume,
        model,
        axes="ZYX",
        z_mode="3d",
        anisotropy=args.anisotropy,
        diameter=None,
        block=block,
        out=Path(args.child).with_name("labels.zarr"),
        engine=args.engine,
        client=args.scheduler,
        progress=watch,
    )


def _largest_id(labels) -> int:
    """The number of objects (ids run 1..N), read chunk by chunk: the labels of the issue's
    volume are 4.3 GB of int32, more than the run's own peak."""
    import dask.array as da

    if not isinstance(labels, da.Array):  # segment() gives a dask view of its zarr output
        labels = da.from_array(labels, chunks=getattr(labels, "chunks", "auto"))
    return int(labels.max().compute(scheduler="threads", num_workers=1))


def _report(labels, volume, plan, before: int, start: float, runs: Path) -> None:
    """The finished size's JSON line: the time and peak of all its runs (resumed ones too)."""
    done = _runs(runs)
    read = sum(b.outer_voxels for b in plan.blocks) / math.prod(volume.shape)
    print(
        json.dumps(
            {
                "shape": list(volume.shape),
                "seconds": sum(r["seconds"] for r in done),
                "runs": len(done),
                "peak_mb": max(r["peak_mb"] for r in done),
                "before_mb": before / 1024,
                "objects": _largest_id(labels),
                "blocks": len(plan.blocks),
                "block": list(plan.block),
                "halo": list(plan.halo),
                "read_factor": read,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=_shape, nargs="+", default=[(32, 256, 256), (64, 256, 256), (64, 512, 512)])  # fmt: skip
    p.add_argument("--block", type=int, nargs=3, metavar=("Z", "Y", "X"))
    p.add_argument("--anisotropy", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engine", default="auto")
    p.add_argument("--scheduler", metavar="ADDRESS")
    p.add_argument("--workdir", type=Path, help="where the volumes go (default: a temp folder)")
    p.add_argument(
        "--stop-after",
        type=float,
        metavar="S",
        help="stop at the first block that ends after S seconds and report the blocks done, "
        "their times and the peak RSS after each (a sample of a run too long to finish)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)
    rows = []
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    keep = contextlib.nullcontext(str(args.workdir)) if args.workdir else None
    with keep or tempfile.TemporaryDirectory() as tmp:
        for shape in args.sizes:
            folder = Path(tmp) / f"{'x'.join(map(str, shape))}-a{args.anisotropy:g}"
            folder.mkdir(exist_ok=True)
            if not (folder / "volume.written").exists():  # kept volumes are written once
                write_volume(folder / "volume.zarr", shape, args.anisotropy)
                (folder / "volume.written").touch()
            cmd = [sys.executable, __file__, "--child", str(folder / "volume.zarr")]
            cmd += ["--anisotropy", str(args.anisotropy), "--threads", str(args.threads)]
            cmd += ["--engine", args.engine]
            cmd += ["--block", *map(str, args.block)] if args.block else []
            cmd += ["--scheduler", args.scheduler] if args.scheduler else []
            cmd += ["--stop-after", str(args.stop_after)] if args.stop_after else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            if "stopped_after_blocks" in row:
                _print_sample(row)
                continue
            voxels = math.prod(row["shape"])
            row["s_per_mvoxel"] = row["seconds"] / (voxels / 1e6)
            rows.append(row)
            runs = f" in {row['runs']} runs (resumed)" if row["runs"] > 1 else ""
            print(
                f"{'x'.join(map(str, row['shape']))}: {voxels / 1e6:.1f} Mvoxels, "
                f"{row['blocks']} blocks of {row['block']} (halo {row['halo']}, "
                f"{row['read_factor']:.2f}x voxels read), {row['objects']} objects, "
                f"{row['seconds']:.1f} s{runs} ({row['s_per_mvoxel']:.1f} s/Mvoxel), "
                f"peak RSS {row['peak_mb']:.0f} MB (before {row['before_mb']:.0f} MB)",
                flush=True,
            )
    if not rows:
        return
    per = [r["s_per_mvoxel"] for r in rows]
    where = f"cluster {args.scheduler}" if args.scheduler else "in-process"
    print(
        f"RESULT blockwise 3d ({where}): {min(per):.1f}-{max(per):.1f} s/Mvoxel, "
        f"peak RSS <= {max(r['peak_mb'] for r in rows):.0f} MB"
    )


def _print_sample(row: dict) -> None:
    """A run stopped by --stop-after: its blocks, their pace and the memory after each."""
    k, n = row["stopped_after_blocks"], row["blocks"]
    times = row["block_seconds"]
    pace = sum(times[1:]) / max(1, len(times) - 1) if len(times) > 1 else times[0]
    peaks = ", ".join(f"{p:.0f}" for p in row["peak_mb_after_each_block"])
    if row["resumed_blocks"]:
        k = f"{k} more (after {row['resumed_blocks']} kept)"
    print(
        f"{'x'.join(map(str, row['shape']))}: stopped after {k} of {n} blocks of "
        f"{row['block']} (halo {row['halo']}, {row['read_factor']:.2f}x voxels read) in "
        f"{row['seconds']:.0f} s; block times {', '.join(f'{t:.0f}' for t in times)} s; "
        f"peak RSS after each block {peaks} MB (before {row['before_mb']:.0f} MB); "
        f"at this pace all {n} blocks take about {pace * n / 3600:.2f} h",
        flush=True,
    )


if __name__ == "__main__":
    main()
