"""Correct and retrain, measured (not part of the test suite): how much does fine-tuning the
built-in model on ONE corrected image help on the other images of its kind?

Usage (from the repository root; reads ``../shared/data/dsb2018_stage1_test``)::

    python benchmarks/bench_correct_retrain.py [--epochs 5] [--threads 2] [--kind strips]
                                               [--zoom 1] [--update-norm-statistics]

It does what the napari *Retrain on corrections* button does, without the GUI: segment every
image of one kind with the built-in model, take the first image's ground truth as the user's
corrected labels (a full correction: region = the whole image), fine-tune the built-in model
on it with the dock's settings (learning rate 1e-4, 128 px patches, batch 8, the engine's
default steps per epoch, post-processing re-tuned by the training run), then segment the
*other* images of that kind with the fine-tuned model. Prints AP@0.5 and mean AP (0.5:0.95)
on those other images before and after, and the minutes each stage took (wall clock and CPU time: on a shared machine the CPU
minutes are the figure to compare).

Kinds (the ones the built-in model does worst on, README "Built-in model: scores"):
``strips``: the four dense 519x161/162 strips; ``wide``: the five 519x253 images.
"""

from __future__ import annotations

import argparse
import csv
import threading
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet import load_model, metrics, segment
from napari_unet._napari._retrain import FINE_TUNE_LR
from napari_unet._napari._train_inputs import PairSource
from napari_unet._napari._train_job import training_job
from napari_unet.inference.rescale import resample
from napari_unet.training.config import TrainConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_stage1_test"
KINDS = {"strips": {(519, 161), (519, 162)}, "wide": {(519, 253)}}


def images_of_kind(kind: str) -> list[str]:
    excluded = set((DATA / "exclude_duplicates_of_train.txt").read_text().split())
    with open(DATA / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    return [
        r["id"]
        for r in rows
        if (int(r["height"]), int(r["width"])) in KINDS[kind]
        and r["modality"] == "fluorescence"
        and r["id"] not in excluded
    ]


def read_pair(image_id: str, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An image and its labels, zoomed (image bilinear, labels nearest)."""
    image = tifffile.imread(DATA / "images" / f"{image_id}.tif")
    truth = tifffile.imread(DATA / "labels" / f"{image_id}.tif").astype(np.int32)
    if zoom != 1.0:
        factors = (zoom, zoom, 1)[: image.ndim]
        image = resample(image, factors, order=1)
        truth = resample(truth, (zoom, zoom), order=0)
    return image, truth


def scores(model, ids: list[str], zoom: float = 1.0) -> tuple[float, float]:
    """Mean over images of AP@0.5 and of mean AP (0.5:0.95), by the default run."""
    ap50, map_ = [], []
    for i in ids:
        image, truth = read_pair(i, zoom)
        pred = segment(image, model)
        ap = metrics.average_precision(truth, pred)  # IoU 0.50, 0.55, ..., 0.95
        ap50.append(ap.scores[0])
        map_.append(ap.mean)
    return float(np.mean(ap50)), float(np.mean(map_))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kind", choices=sorted(KINDS), default="strips")
    parser.add_argument(
        "--zoom", type=float, default=1.0, help="zoom every image first (e.g. 3: larger nuclei)"
    )
    parser.add_argument(
        "--update-norm-statistics",
        action="store_true",
        help="let the fine-tune replace the batch-norm statistics (default: kept)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ids = images_of_kind(args.kind)
    corrected, others = ids[0], ids[1:]
    print(
        f"{args.kind} zoomed {args.zoom:g}x: {len(ids)} images; corrected {corrected[:8]}, "
        f"scored on {len(others)}"
    )

    base = load_model("nuclei")
    t0 = time.perf_counter()
    before = scores(base, others, args.zoom)
    t1, c1 = time.perf_counter(), time.process_time()
    print(f"before: AP@0.5 {before[0]:.3f}, mean AP {before[1]:.3f} ({(t1 - t0) / 60:.1f} min)")

    image, truth = read_pair(corrected, args.zoom)
    source = PairSource(corrected, "corrected", image, truth)
    config = TrainConfig(
        task="instance",
        epochs=args.epochs,
        learning_rate=FINE_TUNE_LR,
        patch_size=128,
        freeze_norm_statistics=False if args.update_norm_statistics else None,
    )
    gen = training_job([source], config, threading.Event(), init="nuclei")
    try:
        while True:
            next(gen)
    except StopIteration as done:
        result = done.value
    t2 = time.perf_counter()
    cpu = time.process_time() - c1
    print(f"fine-tuning used {cpu / 60:.1f} CPU minutes (all threads)")
    print(f"fine-tuned {args.epochs} epochs in {(t2 - t1) / 60:.1f} min "
          f"(best epoch {result.best_epoch + 1}, validation Dice {result.best_dice:.3f})")  # fmt: skip

    after = scores(result.model, others, args.zoom)
    t3 = time.perf_counter()
    print(f"after:  AP@0.5 {after[0]:.3f}, mean AP {after[1]:.3f} ({(t3 - t2) / 60:.1f} min)")
    print(
        f"AP@0.5 on the other {len(others)} images: {before[0]:.3f} -> {after[0]:.3f} "
        f"({after[0] - before[0]:+.3f}); fine-tuning {(t2 - t1) / 60:.1f} min wall, "
        f"{cpu / 60:.1f} CPU min, {args.threads} threads"
    )


if __name__ == "__main__":
    main()
