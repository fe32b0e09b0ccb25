"""The end of a finished blockwise run again: memory after each block and during the merge.

Usage (from the repository root)::

    python benchmarks/bench_blockwise_end.py DIR/256x2048x2048-a2 --block 256 176 176
        [--redo 4] [--anisotropy 2] [--threads 2]

``DIR/<size>`` is a size that ``bench_blockwise.py --workdir DIR`` finished (its
``volume.zarr`` and ``labels.zarr``). A run of hours cannot be repeated for each change, but its
end can: this starts the same run into ``DIR/<size>/end/labels.zarr`` and stops it after its
first block, then marks every block finished but ``--redo`` interior ones (their records and
local ids rebuilt from the finished labels, as a run keeps them), and resumes it in a fresh
process, as a resumed run does: those blocks are segmented again and all of them merged. It
prints the RSS and the peak RSS after each block, the RSS during the merge and the peak of the
whole process, then checks that the labels equal the finished run's voxel for voxel.

A peak that rises from block to block with the same kind of block is memory kept between
blocks (the run's peak then grows with its length); a flat one is bounded by one block.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmRSS")).split()[1]) / 1024


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Stop(Exception):
    pass


def _run(folder: Path, args: argparse.Namespace, first_only: bool) -> None:
    """Segment (or resume) the volume into ``folder/end/labels.zarr``; print per block."""
    import torch
    import zarr

    from napari_unet import segment
    from napari_unet.inference.pipeline import builtin_model

    torch.set_num_threads(args.threads)
    volume = zarr.open_array(str(folder / "volume.zarr"), mode="r")
    start, merging = time.perf_counter(), []

    def watch(event) -> None:
        if event.stage == "postprocess" and event.total == args.n_blocks:
            print(  # (the post-processing's chunk events have other totals)
                f"block {event.done}/{event.total}: {time.perf_counter() - start:.0f} s, "
                f"RSS {_rss_mb():.0f} MiB, peak {_peak_mb():.0f} MiB",
                flush=True,
            )
            if first_only:
                raise _Stop
        elif event.stage == "merging blocks":
            merging.append(_rss_mb())

    try:
        segment(
            volume,
            builtin_model("nuclei"),
            axes="ZYX",
            z_mode="3d",
            anisotropy=args.anisotropy,
            diameter=None,
            block=tuple(args.block),
            out=folder / "end" / "labels.zarr",
            progress=watch,
        )
    except _Stop:
        return
    print(
        f"merge: RSS at most {max(merging):.0f} MiB; whole process: "
        f"{time.perf_counter() - start:.0f} s, peak RSS {_peak_mb():.0f} MiB",
        flush=True,
    )


def _mark_finished(folder: Path, args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """Record every block but ``--redo`` interior ones as finished, from the final labels."""
    import zarr

    from napari_unet.inference.volumes.blockwise.plan import plan_blocks, plane_below
    from napari_unet.inference.volumes.blockwise.resume import BlockLedger, ledger_path

    final = zarr.open_array(str(folder / "labels.zarr"), mode="r")
    out = folder / "end" / "labels.zarr"
    state = json.loads((ledger_path(out) / "run.json").read_text())
    ledger = BlockLedger(out, state["fingerprint"])
    local = zarr.open_array(str(ledger.labels_path), mode="r+")
    plan = plan_blocks(final.shape, args.block, state["fingerprint"]["halo"])
    grid = plan.grid_shape
    centre = [(n - 1) / 2 for n in grid]
    interior = sorted(  # blocks off the volume's faces (where it has some), central first
        (b.grid for b in plan.blocks if all(0 < g < n - 1 or n < 3 for g, n in zip(b.grid, grid))),
        key=lambda g: sum((a - c) ** 2 for a, c in zip(g, centre)),
    )
    redo = set(interior[: args.redo])
    done = ledger.finished(0, plan)
    for blk in plan.blocks:
        if blk.grid in redo or blk.grid in done:
            continue
        core = np.asarray(final[blk.core])
        faces = {}
        for axis, _ in plan.below(blk):
            faces[axis] = np.asarray(final[plane_below(blk.core, axis)])
        ids = np.unique(np.concatenate([core.ravel(), *(f.ravel() for f in faces.values())]))
        ids = ids[ids > 0]

        def as_local(a, ids=ids):
            return np.where(a > 0, np.searchsorted(ids, a) + 1, 0).astype(np.int32)

        labels = as_local(core)
        local[blk.core] = labels
        skins = {axis: as_local(f) for axis, f in faces.items()}
        ledger.record(0, blk, len(ids), np.unique(labels), skins)
    return sorted(redo)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a size bench_blockwise.py --workdir finished")
    p.add_argument("--block", type=int, nargs=3, required=True, metavar=("Z", "Y", "X"))
    p.add_argument("--redo", type=int, default=4, help="interior blocks to segment again")
    p.add_argument("--anisotropy", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=("first", "resume"), help=argparse.SUPPRESS)
    p.add_argument("--n-blocks", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _run(args.folder, args, first_only=args.child == "first")
    import zarr

    from napari_unet.inference.volumes.blockwise.plan import plan_blocks

    final = zarr.open_array(str(args.folder / "labels.zarr"), mode="r")
    n_blocks = len(plan_blocks(final.shape, args.block, (1, 1, 1)).blocks)
    shutil.rmtree(args.folder / "end", ignore_errors=True)
    cmd = [sys.executable, __file__, str(args.folder), "--block", *map(str, args.block)]
    cmd += ["--anisotropy", str(args.anisotropy), "--threads", str(args.threads)]
    cmd += ["--n-blocks", str(n_blocks)]
    subprocess.run([*cmd, "--child", "first"], check=True, capture_output=True)
    redo = _mark_finished(args.folder, args)
    print(f"segmenting again {len(redo)} of {n_blocks} blocks ({redo}), then the merge")
    subprocess.run([*cmd, "--child", "resume"], check=True)
    again = zarr.open_array(str(args.folder / "end" / "labels.zarr"), mode="r")
    step = final.chunks[0]
    differ = sum(
        int((np.asarray(final[z : z + step]) != np.asarray(again[z : z + step])).sum())
        for z in range(0, final.shape[0], step)
    )
    print(f"labels differing from the finished run's: {differ} voxels")


if __name__ == "__main__":
    main()
