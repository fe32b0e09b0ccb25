"""Test-time augmentation: what averaging over flips and rotations buys, and what it costs.

Usage (from the repository root)::

    python benchmarks/bench_tta.py [--limit N] [--threads 2]

The 49 DSB 2018 stage-1 test fluorescence images (the 4 duplicates of training images left
out), each segmented with the default run and with ``tta=True`` (the same object-size
measurement; 8 views of each tile: 4 flips x 2 quarter turns), one after the other so load on
the machine hits both. Prints the mean over images of the DSB average precision at IoU 0.5 and
0.75 and its mean over 0.5:0.95 for both, and the summed time of the TTA runs over that of the
plain runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tifffile
import torch
from bench_modalities import DATA, THRESHOLDS, manifest

from napari_unet import segment
from napari_unet.metrics import average_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = DATA / "dsb2018_stage1_test"
    ids = manifest(folder, lambda r: r["modality"] == "fluorescence")[: args.limit or None]
    scores = {False: [], True: []}
    seconds = {False: 0.0, True: 0.0}
    for n, i in enumerate(ids):
        image = tifffile.imread(folder / "images" / f"{i}.tif")
        truth = tifffile.imread(folder / "labels" / f"{i}.tif")
        for tta in (False, True):
            started = time.perf_counter()
            labels = segment(image, tta=tta)
            seconds[tta] += time.perf_counter() - started
            ap = average_precision(truth, labels, THRESHOLDS)
            scores[tta].append((ap.scores[0], ap.scores[5], ap.mean))
        print(f"{n + 1}/{len(ids)}", flush=True)
    for tta in (False, True):
        ap50, ap75, mean_ap = np.mean(scores[tta], axis=0)
        print(f"tta={tta!s:5}  AP@0.5 {ap50:.3f}  AP@0.75 {ap75:.3f}  mean AP {mean_ap:.3f}")
    print(f"time, tta / plain: {seconds[True] / seconds[False]:.2f}")


if __name__ == "__main__":
    main()
