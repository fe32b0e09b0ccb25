"""Does the per-object confidence say where to correct first? (not part of the test suite)

Usage (from the repository root)::

    python benchmarks/bench_confidence.py [--limit N] [--threads 1] [--csv objects.csv]

The 49 DSB 2018 stage-1 test fluorescence images (the 4 duplicates of training images left
out) are segmented by the default run (built-in model, ``diameter="auto"``) with
``return_probabilities=True, table=True``. Every predicted object is matched to the ground
truth (:func:`napari_unet.evaluation.matching.overlap_table`); it is an **error** when its best
IoU with any true object is below 0.5 (a false positive, a merge, a split or a bad outline).

Each candidate confidence measure is computed per object from the probabilities (background,
interior, boundary); the objects of all images are pooled, ranked by the measure, and the
error rate of the least confident tenth is compared with that of the most confident tenth
(target: at least 3x), with the area under the ROC curve of "correct object" against the
measure (0.5: no better than chance). ``engine`` is what
:func:`napari_unet.inference.labels.objects.object_table` puts in its ``confidence`` column:
the mean of ``foreground``, ``peak_interior`` and ``rim_boundary``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi
from scipy.stats import rankdata
from skimage.segmentation import expand_labels, find_boundaries

from napari_unet import segment
from napari_unet.evaluation.matching import overlap_table
from napari_unet.inference.labels.objects import confidence_parts, object_table

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018_stage1_test"
#: an object whose best IoU with the ground truth is below this is an error
IOU_OK = 0.5
#: what the candidates mean, in the order printed
CANDIDATES = {
    "mean_interior": "mean interior probability over the object",
    "foreground": "mean foreground probability (1 - background) over the object",
    "confident_fraction": "share of the object's pixels with foreground probability > 0.8",
    "peak_interior": "highest interior probability in the object",
    "rim_boundary": "mean boundary probability on the object's rim (boundary sharpness)",
    "edge_gradient": "mean |gradient| of the foreground probability on the rim (sharpness)",
    "ring_contrast": "mean foreground inside minus in a 2-px ring outside",
    "engine": "mean of foreground, peak_interior and rim_boundary (object_table's)",
}


def test_images(root: Path) -> list[Path]:
    """The fluorescence images of the stage-1 test set, minus the duplicates of training ones."""
    excluded = set((root / "exclude_duplicates_of_train.txt").read_text().split())
    with open(root / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["modality"] == "fluorescence"]
    return [root / "images" / f"{r['id']}.tif" for r in rows if r["id"] not in excluded]


def candidates(labels: np.ndarray, probs: np.ndarray, table: dict) -> dict[str, np.ndarray]:
    """Every candidate measure, per object of ``table`` (its ``label`` order)."""
    ids = table["label"]
    fg = 1.0 - probs[0]
    rim = np.where(find_boundaries(labels, mode="inner"), labels, 0)
    ring = np.where(labels == 0, expand_labels(labels, 2), 0)
    parts = confidence_parts(labels, probs, ids)
    foreground = parts["foreground"]
    return {
        "mean_interior": ndi.mean(probs[1], labels, ids),
        "foreground": foreground,
        "confident_fraction": ndi.mean((fg > 0.8).astype(np.float32), labels, ids),
        "peak_interior": parts["peak_interior"],
        "rim_boundary": parts["rim_boundary"],
        "edge_gradient": ndi.mean(np.hypot(*np.gradient(fg)), rim, ids),
        "ring_contrast": foreground - np.nan_to_num(ndi.mean(fg, ring, ids)),
        "engine": table["confidence"],
    }


def errors(truth: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per object of ``ids``: whether its best IoU with a true object is below :data:`IOU_OK`."""
    table, _, _ = overlap_table(truth, labels)
    best = np.zeros(table.n_pred)
    np.maximum.at(best, table.pair_pred, table.pair_iou)
    by_id = dict(zip(table.pred_ids.tolist(), best.tolist()))
    return np.array([by_id.get(i, 0.0) < IOU_OK for i in ids.tolist()])


def auc(correct: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``correct`` against ``score`` (Mann-Whitney U)."""
    ranks = rankdata(score)
    n_pos, n_neg = int(correct.sum()), int((~correct).sum())
    return float((ranks[correct].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tenths(error: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Error rate of the least and of the most confident tenth of the objects."""
    order = np.argsort(score, kind="stable")
    n = max(1, error.size // 10)
    return float(error[order[:n]].mean()), float(error[order[-n:]].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--csv", type=Path, help="write every object's measures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = test_images(args.data)[: args.limit or None]
    measures: dict[str, list[np.ndarray]] = {name: [] for name in CANDIDATES}
    wrong, rows, table_seconds, started = [], [], 0.0, time.perf_counter()
    for path in files:
        image = tifffile.imread(path)
        truth = tifffile.imread(args.data / "labels" / path.name)
        labels, probs, table = segment(image, return_probabilities=True, table=True)
        t0 = time.perf_counter()
        object_table(labels, probs, image)  # what the table costs on top of the run
        table_seconds += time.perf_counter() - t0
        found = candidates(labels, probs, table)
        error = errors(truth, labels, table["label"])
        wrong.append(error)
        for name, values in found.items():
            measures[name].append(np.asarray(values, np.float64))
        rows += [
            {"image": path.stem[:12], "label": int(i), "error": int(e)}
            | {n: round(float(v[k]), 5) for n, v in found.items()}
            for k, (i, e) in enumerate(zip(table["label"], error))
        ]
        print(f"{path.stem[:12]} {image.shape}: {error.size} objects, {error.sum()} errors")
    image_of = np.concatenate([np.full(e.size, k) for k, e in enumerate(wrong)])
    report(np.concatenate(wrong), {n: np.concatenate(v) for n, v in measures.items()}, image_of)
    print(
        f"{len(files)} images in {time.perf_counter() - started:.0f} s; the tables took "
        f"{table_seconds:.2f} s in all"
    )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def report(error: np.ndarray, measures: dict[str, np.ndarray], image_of: np.ndarray) -> None:
    """Per measure: error rates of the extreme tenths, their ratio, AUC (all, odd/even images).

    The AUC of the odd- and even-numbered images apart says how stable a difference is.
    """
    print(
        f"\n{error.size} objects, {int(error.sum())} errors ({error.mean():.1%}): "
        f"best IoU < {IOU_OK} or no match"
    )
    print(
        f"{'measure':20s} {'lowest 10%':>10s} {'highest 10%':>11s} {'ratio':>7s} {'AUC':>6s} "
        f"{'AUC odd/even images':>20s}"
    )
    halves = [image_of % 2 == 1, image_of % 2 == 0]
    for name, values in measures.items():
        low, high = tenths(error, values)
        ratio = f"{low / high:.1f}" if high > 0 else "inf"
        split = " / ".join(f"{auc(~error[h], values[h]):.3f}" for h in halves)
        print(
            f"{name:20s} {low:10.3f} {high:11.3f} {ratio:>7s} {auc(~error, values):6.3f} "
            f"{split:>20s}"
        )
    for name, words in CANDIDATES.items():
        print(f"  {name}: {words}")


if __name__ == "__main__":
    main()
