"""Choose the instance post-processing thresholds on the held-out validation images.

Reconstructs the validation split that ``napari-unet train --val-fraction 0.1 --seed S`` held
out of ``dsb2018_fluo`` (never the test set), predicts their probabilities once with MODEL, and
prints the mean AP at IoU 0.5 and the mean AP over 0.5:0.95 for a grid of seed / foreground
thresholds and seed split heights.

Usage: python scripts/tune_postprocessing.py MODEL [--seed 2018] [--data DIR]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import tifffile

from napari_unet import load_model, segment
from napari_unet.inference.postprocess import instance_labels
from napari_unet.metrics import average_precision
from napari_unet.training.data import match_folder_pairs


def validation_pairs(data: Path, seed: int, fraction: float = 0.1) -> list[tuple[Path, Path]]:
    """The (image, labels) files the training run held out, as ``_split_validation`` picks them."""
    pairs = match_folder_pairs(data / "images", data / "labels")
    n_val = min(max(1, round(fraction * len(pairs))), len(pairs) - 1)
    order = np.random.default_rng(seed + 1).permutation(len(pairs))
    return [pairs[int(i)] for i in sorted(order[:n_val])]


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument(
        "--data", type=Path, default=here.parent / "shared" / "data" / "dsb2018_fluo"
    )
    args = parser.parse_args()
    model = load_model(args.model)
    cache = []
    for image_path, labels_path in validation_pairs(args.data, args.seed):
        probs = segment(tifffile.imread(image_path), model, output="probabilities", diameter=None)
        cache.append((probs, tifffile.imread(labels_path)))
    print(f"{len(cache)} validation images")
    print("seed_thr  fg_thr  split  min_size  AP@0.5  AP@0.5:0.95")
    for seed_t, fg_t, split, min_size in itertools.product(
        (0.5, 0.6, 0.7, 0.8), (0.5, 0.6), (0.0, 0.75, 1.0, 1.5), (10, 20)
    ):
        ap50, ap = [], []
        for probs, truth in cache:
            pred = instance_labels(
                probs,
                min_size=min_size,
                seed_threshold=seed_t,
                foreground_threshold=fg_t,
                split=split,
            )
            result = average_precision(truth, pred)
            ap50.append(result.scores[0])
            ap.append(float(result))
        print(
            f"{seed_t:8.2f}  {fg_t:6.2f}  {split:5.2f}  {min_size:8d}  "
            f"{np.mean(ap50):.4f}  {np.mean(ap):.4f}"
        )


if __name__ == "__main__":
    main()
