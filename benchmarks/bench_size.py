"""Automatic object size across magnifications (not part of the test suite).

Usage (from the repository root)::

    python benchmarks/bench_size.py [--whole] [--zooms 0.5 1 2 3 4] [--fov 512] [--limit N]
                                    [--model nuclei] [--legacy] [--threads 2] [--csv out.csv]

The DSB 2018 stage-1 test fluorescence images (minus the 4 duplicates of training images), in
the order of ``manifest.csv``, resampled by every zoom (images bilinear, labels nearest):

* crop mode (default): all 49 images, each cropped to its central ``--fov`` x ``--fov``
  pixels (the same field of view at every zoom; the images are 161-696 px, so 512 keeps all
  of most and at least 512 x 512 of the others): at zoom 4 up to 2048 x 2048. A smaller field
  of view holds too few nuclei: at 256 px, 5 of the 49 crops held 0-2 whole annotated nuclei,
  and their "true" diameter was a median of nuclei cut by the crop.
* ``--whole``: the first :data:`WHOLE_IMAGES` (16) of them resampled whole, not cropped
  (``--fov`` is ignored; at zoom 4 the 512 x 640 ones are 2048 x 2560): small nuclei at 0.5x keep their whole
  image around them, and the large images at 4x cost what they cost.

Per image and zoom: the diameter the default run (``diameter="auto"``) measured, against the
annotated median equivalent diameter of the objects of that image (those not cut by its
border, as the estimate counts them; all of them when fewer than 3 are whole, column
``whole_nuclei``); the DSB average precision at IoU 0.5 and 0.75 and its mean over 0.5:0.95
of the default run and of the run given the true diameter; their times (run one after the
other in the same process, so load on the machine hits both).
Prints per zoom: the share of images whose estimate is within +-25% of the truth, the mean
AP@0.5, AP@0.75 and mean AP of both runs, and the summed time of the default runs over that
of the true-diameter runs; at the end a table of all zooms. ``--legacy`` drops the card's
``size_model`` (the measurement models had before it).
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
from napari_unet.inference.sizing.rescale import resample
from napari_unet.inference.sizing.size import diameter_from_labels
from napari_unet.metrics import average_precision

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018_stage1_test"
#: how many images ``--whole`` resamples (the first of :func:`test_images`)
WHOLE_IMAGES = 16
#: the DSB metric's IoU thresholds: 0.50, 0.55, ..., 0.95 (index 0: AP@0.5, index 5: AP@0.75)
THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def test_images(root: Path) -> list[Path]:
    """The fluorescence images of the stage-1 test set, minus the duplicates of training ones,
    in the order of ``manifest.csv``."""
    excluded = set((root / "exclude_duplicates_of_train.txt").read_text().split())
    with open(root / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["modality"] == "fluorescence"]
    return [root / "images" / f"{r['id']}.tif" for r in rows if r["id"] not in excluded]


def central(array: np.ndarray, side: int) -> np.ndarray:
    window = tuple(
        slice(max(0, (n - side) // 2), max(0, (n - side) // 2) + side) for n in array.shape
    )
    return array[window]


def field(array: np.ndarray, fov: int | None) -> np.ndarray:
    """The central ``fov`` x ``fov`` crop of ``array``, or all of it (``fov`` None)."""
    return array if fov is None else central(array, fov)


def scores(truth: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """AP@0.5, AP@0.75 and the mean AP over IoU 0.5:0.95 of ``labels`` against ``truth``."""
    ap = average_precision(truth, labels, THRESHOLDS)
    return ap.scores[0], ap.scores[5], ap.mean


def whole_objects(labels: np.ndarray) -> int:
    """How many objects of ``labels`` do not touch its border."""
    return len(np.unique(clear_border(labels))) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.5, 1, 2, 3, 4])
    parser.add_argument("--fov", type=int, default=512, help="central field of view (px)")
    parser.add_argument(
        "--whole", action="store_true",
        help=f"resample the first {WHOLE_IMAGES} images whole instead of central crops",
    )  # fmt: skip
    parser.add_argument(
        "--limit", type=int, default=0,
        help=f"only the first N images (default: all; {WHOLE_IMAGES} with --whole)",
    )  # fmt: skip
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
    fov = None if args.whole else args.fov
    files = test_images(args.data)[: args.limit or (WHOLE_IMAGES if args.whole else None)]
    what = "resampled whole" if args.whole else f"central {args.fov} px crops resampled"
    print(f"{len(files)} DSB stage-1 test fluorescence images, {what}", flush=True)
    rows = []
    for zoom in args.zooms:
        warm = resample(field(tifffile.imread(files[0]), fov), (zoom, zoom), order=1)
        segment(warm, model, device="cpu")  # not timed: the engine is prepared once per size
        for path in files:
            image = tifffile.imread(path)
            truth = relabel_sequential(tifffile.imread(args.data / "labels" / path.name))[0]
            image = resample(field(image, fov), (zoom, zoom), order=1)
            truth = resample(field(truth, fov), (zoom, zoom), order=0)
            true_d = diameter_from_labels(truth)
            events = []
            t0 = time.perf_counter()
            auto = segment(image, model, device="cpu", progress=events.append)
            t1 = time.perf_counter()
            given = segment(image, model, diameter=true_d, device="cpu")
            t2 = time.perf_counter()
            last = events[-1]
            ap50_auto, ap75_auto, map_auto = scores(truth, auto)
            ap50_true, ap75_true, map_true = scores(truth, given)
            rows.append(
                {
                    "zoom": zoom,
                    "image": path.stem[:12],
                    "shape": "x".join(map(str, image.shape)),
                    "whole_nuclei": whole_objects(truth),
                    "true_diameter": round(true_d, 2),
                    "estimate": None if last.diameter is None else round(last.diameter, 2),
                    "scale": round(last.scale, 4),
                    "ap50_auto": round(ap50_auto, 4),
                    "ap75_auto": round(ap75_auto, 4),
                    "map_auto": round(map_auto, 4),
                    "ap50_true": round(ap50_true, 4),
                    "ap75_true": round(ap75_true, 4),
                    "map_true": round(map_true, 4),
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
    table(rows, args.zooms, what)


def summary(rows: list[dict], zoom: float) -> dict[str, float]:
    """The means over the images of ``zoom`` and the summed times."""
    rows = [r for r in rows if r["zoom"] == zoom]
    est = np.array([np.nan if r["estimate"] is None else r["estimate"] for r in rows])
    true = np.array([r["true_diameter"] for r in rows])
    error = np.abs(est / true - 1)
    out = {f"{k}_{run}": float(np.mean([r[f"{k}_{run}"] for r in rows]))
           for k in ("ap50", "ap75", "map") for run in ("auto", "true")}  # fmt: skip
    auto = sum(r["time_auto"] for r in rows)
    given = sum(r["time_true"] for r in rows)
    within = float((np.isfinite(est) & (error <= 0.25)).mean())
    median = float(np.nanmedian(error)) if np.isfinite(error).any() else float("nan")
    return {**out, "n": len(rows), "within": within, "median_error": median,
            "time_auto": auto, "time_true": given, "ratio": auto / given}  # fmt: skip


def report(rows: list[dict], zoom: float) -> None:
    """One RESULT line for the rows of ``zoom``."""
    s = summary(rows, zoom)
    print(
        f"RESULT zoom {zoom:g}: {s['n']} images, estimate within 25% {s['within']:.3f} "
        f"(median |error| {s['median_error']:.3f}), auto / true diameter: "
        f"AP@0.5 {s['ap50_auto']:.3f} / {s['ap50_true']:.3f}, "
        f"AP@0.75 {s['ap75_auto']:.3f} / {s['ap75_true']:.3f}, "
        f"mean AP {s['map_auto']:.3f} / {s['map_true']:.3f}, time auto / true "
        f"{s['ratio']:.2f} ({s['time_auto']:.1f} s vs {s['time_true']:.1f} s)",
        flush=True,
    )


def table(rows: list[dict], zooms: list[float], what: str) -> None:
    """All zooms in one Markdown table: the default run's scores, (true diameter's), time."""
    stats = [summary(rows, zoom) for zoom in zooms]
    print(f"\n{stats[0]['n']} images, {what}; default run (run given the true diameter)\n")
    print("| zoom | " + " | ".join(f"{z:g}" for z in zooms) + " |")
    print("|---" * (len(zooms) + 1) + "|")
    for key, name in (("ap50", "AP@0.5"), ("ap75", "AP@0.75"), ("map", "mean AP 0.5:0.95")):
        cells = [f"{s[key + '_auto']:.3f} ({s[key + '_true']:.3f})" for s in stats]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| time, auto / true diameter | " + " | ".join(f"{s['ratio']:.2f}" for s in stats) + " |")


if __name__ == "__main__":
    main()
