"""Choose the instance post-processing thresholds on the held-out validation images.

Reconstructs the validation split that ``napari-unet train --val-fraction 0.1 --seed S`` held
out of ``dsb2018_fluo`` (never the test set), predicts their probabilities once with MODEL, and
prints the mean AP at IoU 0.5 and the mean AP over 0.5:0.95 for a grid of seed / foreground
thresholds and seed split heights: :func:`napari_unet.training.finishing.tune.search`, the
search every training run ends with, on whole validation images instead of validation crops.

Usage: python scripts/tune_postprocessing.py MODEL [--seed 2018] [--data DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile

from napari_unet import load_model, segment
from napari_unet.training.data.pairs import match_folder_pairs
from napari_unet.training.finishing.tune import search

#: the grid the built-in model's settings were chosen from (training runs search DEFAULT_GRID)
GRID = {
    "seed_threshold": (0.5, 0.6, 0.7, 0.8),
    "foreground_threshold": (0.5, 0.6),
    "split": (0.0, 0.75, 1.0, 1.5),
    "min_size": (10, 20),
}


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
    probs, truths = [], []
    for image_path, labels_path in validation_pairs(args.data, args.seed):
        image = tifffile.imread(image_path)
        probs.append(segment(image, model, output="probabilities", diameter=None))
        truths.append(tifffile.imread(labels_path))
    print(f"{len(truths)} validation images")
    result = search(probs, truths, GRID)
    print("seed_thr  fg_thr  split  min_size  AP@0.5  AP@0.5:0.95")
    for row in result.table:
        print(
            f"{row['seed_threshold']:8.2f}  {row['foreground_threshold']:6.2f}  "
            f"{row['split']:5.2f}  {row['min_size']:8d}  {row['ap50']:.4f}  {row['mean_ap']:.4f}"
        )
    print(f"best: {result.settings} ({result.seconds:.0f} s)")


if __name__ == "__main__":
    main()
