"""Automatic object size across magnifications (not part of the test suite).

Usage (from the repository root)::

    python benchmarks/bench_size.py [--zooms 0.5 1 2 3 4] [--fov 512] [--limit N]
                                    [--model nuclei] [--legacy] [--threads 2] [--csv out.csv]

The DSB 2018 stage-1 test fluorescence images (minus the 4 duplicates of training images),
each cropped to its central ``--fov`` x ``--fov`` pixels (the same field of view at every
zoom; the images are 161-696 px, so 512 keeps all of most and at least 512 x 512 of the
others) and resampled by every zoom (images bilinear, labels nearest): at zoom 4 up to
2048 x 2048. A smaller field of view holds too few nuclei: at 256 px, 5 of the 49 crops held
0-2 whole annotated nuclei, and their "true" diameter was a median of nuclei cut by the crop.
Per image and zoom: the diameter the default run (``diameter="auto"``) measured, against the
annotated median equivalent diameter of the objects of that image (those not cut by its
border, as the estimate counts them; all of them when fewer than 3 are whole, column
``whole_nuclei``); AP@0.5 of the default run and of the run given the true diameter; their
times (run one after the other, so load on the machine hits both).
Prints per zoom: the share of images whose estimate is within +-25% of the truth, the mean
AP@0.5 of both runs, and the summed time of the default runs over that of the true-diameter
runs. ``--legacy`` drops the card's ``size_model`` (the measurement models had before it).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.segmentation import clear_border, relabel_sequential

from napari_unet import load_model, segment
from napari_unet.inference.rescale import resample
from napari_unet.inference.size import diameter_from_labels
from napari_unet.metrics import average_precision

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018_stage1_test"


def test_images(root: Path) -> list[Path]:
    """The fluorescence images of the stage-1 test set, minus the duplicates of training ones."""
    excluded = set((root / "exclude_duplicates_of_train.txt").read_text().split())
    with open(root / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["modality"] == "fluorescence"]
    return [root / "images" / f"{r['id']}.tif" for r in rows if r["id"] not in excluded]


def central(array: np.ndarray, side: int) -> np.ndarray:
    window = tuple(
        slice(max(0, (n - side) // 2), max(0, (n - side) // 2) + side) for n in array.shape
    )
    return array[window]


def whole_objects(labels: np.ndarray) -> int:
    """How many objects of ``labels`` do not touch its border."""
    return len(np.unique(clear_border(labels))) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.5, 1, 2, 3, 4])
    parser.add_argument("--fov", type=int, default=512, help="central field of view (px)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--legacy", action="store_true", help="ignore the card's size_model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.legacy:
        model.card.pop("size_model", None)
    files = test_images(args.data)[: args.limit or None]
    rows = []
    for zoom in args.zooms:
        warm = resample(central(tifffile.imread(files[0]), args.fov), (zoom, zoom), order=1)
        segment(warm, model, device="cpu")  # not timed: the engine is prepared once per size
        for path in files:
            image = tifffile.imread(path)
            truth = relabel_sequential(tifffile.imread(args.data / "labels" / path.name))[0]
            image = resample(central(image, args.fov), (zoom, zoom), order=1)
            truth = resample(central(truth, args.fov), (zoom, zoom), order=0)
            true_d = diameter_from_labels(truth)
            events = []
            t0 = time.perf_counter()
            auto = segment(image, model, device="cpu", progress=events.append)
            t1 = time.perf_counter()
            given = segment(image, model, diameter=true_d, device="cpu")
            t2 = time.perf_counter()
            last = events[-1]
            rows.append(
                {
                    "zoom": zoom,
                    "image": path.stem[:12],
                    "shape": "x".join(map(str, image.shape)),
                    "whole_nuclei": whole_objects(truth),
                    "true_diameter": round(true_d, 2),
                    "estimate": None if last.diameter is None else round(last.diameter, 2),
                    "scale": round(last.scale, 4),
                    "ap50_auto": round(average_precision(truth, auto).scores[0], 4),
                    "ap50_true": round(average_precision(truth, given).scores[0], 4),
                    "time_auto": round(t1 - t0, 4),
                    "time_true": round(t2 - t1, 4),
                }
            )
            print(rows[-1], flush=True)
        report(rows, zoom)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for zoom in args.zooms:
        report(rows, zoom)


def report(rows: list[dict], zoom: float) -> None:
    """One RESULT line for the rows of ``zoom``."""
    rows = [r for r in rows if r["zoom"] == zoom]
    est = np.array([np.nan if r["estimate"] is None else r["estimate"] for r in rows])
    true = np.array([r["true_diameter"] for r in rows])
    within = np.isfinite(est) & (np.abs(est / true - 1) <= 0.25)
    auto = sum(r["time_auto"] for r in rows)
    given = sum(r["time_true"] for r in rows)
    print(
        f"RESULT zoom {zoom:g}: {len(rows)} images, estimate within 25% {within.mean():.3f} "
        f"(median |error| {np.nanmedian(np.abs(est / true - 1)):.3f}), AP@0.5 auto "
        f"{np.mean([r['ap50_auto'] for r in rows]):.3f} / true diameter "
        f"{np.mean([r['ap50_true'] for r in rows]):.3f}, time auto / true {auto / given:.2f} "
        f"({auto:.1f} s vs {given:.1f} s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
