"""Write the chosen post-processing and the measured test scores into a model's card.

The second step of the built-in model's recipe, after ``train_builtin_model.sh``: the
post-processing thresholds come from ``tune_postprocessing.py`` (validation images only), the
scores from ``score_builtin_model.sh`` (the test images). The weights are not changed.

Usage: python scripts/finalize_builtin_model.py MODEL --seed-threshold T --foreground-threshold F
       --min-size N --test-csv unet.csv --baseline-csv otsu.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from napari_unet import load_model, save_model

KEYS = ("pixel_precision", "pixel_recall", "pixel_iou", "pixel_dice", "precision", "recall", "f1",
        "panoptic_quality", "ap@0.50", "ap@0.75", "ap")  # fmt: skip


def mean_row(path: Path) -> dict[str, float]:
    with open(path) as f:
        row = next(r for r in csv.DictReader(f) if r["image"] == "mean")
    return {k: round(float(row[k]), 4) for k in KEYS if k in row}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--seed-threshold", type=float, required=True)
    p.add_argument("--foreground-threshold", type=float, required=True)
    p.add_argument("--min-size", type=int, required=True)
    p.add_argument("--test-csv", type=Path, required=True)
    p.add_argument("--baseline-csv", type=Path, required=True)
    args = p.parse_args()
    model = load_model(args.model)
    model.card["postprocessing"] = {
        "seed_threshold": args.seed_threshold,
        "foreground_threshold": args.foreground_threshold,
        "min_size": args.min_size,
    }
    test = "DSB 2018 stage-1 test, 49 fluorescence images (4 duplicates of training images excluded); mean over images"
    model.card["metrics"] = {
        **model.card.get("metrics", {}),
        "test_set": test,
        "test": mean_row(args.test_csv),
        "baseline_otsu_watershed_test": mean_row(args.baseline_csv),
    }
    save_model(model, args.model, half=True)
    print(f"updated the card of {args.model}")


if __name__ == "__main__":
    main()
