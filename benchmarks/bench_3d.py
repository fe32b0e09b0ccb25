"""Z stacks with the built-in 2D model: time, peak memory and AP of each z_mode (not a test).

Usage (from the repository root)::

    python benchmarks/bench_3d.py [--shape 64 512 512] [--anisotropy 4] [--threads 2]

A synthetic stack of textured ellipsoids (``tests/synthetic3d.py``) is segmented with
``z_mode="slices"``, ``"stitch"`` and ``"3d"``, each in a fresh process (so each mode's peak
resident memory is its own), with ``diameter=None`` (no object-size pass: the nuclei already
have the size the model expects). Prints per mode the wall time, the peak RSS above the
process's RSS before segmenting (model and stack loaded), the average precision against the
known ids at IoU 0.5 and 0.75 and its mean over 0.5:0.95 (the DSB metric), and ``RESULT``
lines with the time and memory ratios to ``slices``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = ("slices", "stitch", "3d")


def _child(args: argparse.Namespace) -> None:
    """Segment the saved stack with one mode; print a JSON line."""
    import torch

    from napari_unet import load_model, segment
    from napari_unet.metrics import average_precision

    torch.set_num_threads(args.threads)
    data = np.load(args.stack)
    image, truth = data["image"], data["truth"]
    model = load_model()
    segment(image[:2, :64, :64], model, axes="ZYX", z_mode="slices", diameter=None)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    labels = segment(
        image, model, axes="ZYX", z_mode=args.child, anisotropy=args.anisotropy, diameter=None
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ap = average_precision(truth, labels, np.round(np.arange(0.5, 1.0, 0.05), 2))
    print(
        json.dumps(
            {
                "mode": args.child,
                "seconds": seconds,
                "extra_mb": (peak - before) / 1024,
                "peak_mb": peak / 1024,
                "ap50": ap.scores[0],
                "ap75": ap.scores[5],
                "mean_ap": ap.mean,
                "objects": int(truth.max()),
                "found": int(len(np.unique(labels)) - 1),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--anisotropy", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--stack", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic3d import ellipsoid_stack

    image, truth = ellipsoid_stack(tuple(args.shape), args.anisotropy, seed=args.seed)
    print(f"stack {image.shape}, anisotropy {args.anisotropy}, {truth.max()} ellipsoids")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack.npz"
        np.savez(stack, image=image, truth=truth)
        for mode in MODES:
            cmd = [sys.executable, __file__, "--child", mode, "--stack", str(stack)]
            cmd += ["--anisotropy", str(args.anisotropy), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows[mode] = json.loads(out.strip().splitlines()[-1])
            r = rows[mode]
            print(
                f"{mode:7s} {r['seconds']:8.1f} s  +{r['extra_mb']:7.0f} MB peak RSS "
                f"(total {r['peak_mb']:.0f} MB)  AP@0.5 {r['ap50']:.3f}  "
                f"AP@0.75 {r['ap75']:.3f}  mean AP {r['mean_ap']:.3f}  "
                f"{r['found']} objects found of {r['objects']}"
            )
    base = rows["slices"]
    for mode in ("stitch", "3d"):
        r = rows[mode]
        print(
            f"RESULT {mode}/slices time {r['seconds'] / base['seconds']:.2f}  "
            f"extra memory {r['extra_mb'] / max(base['extra_mb'], 1):.2f}  "
            f"total peak {r['peak_mb'] / base['peak_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
