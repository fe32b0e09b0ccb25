"""Write the chosen post-processing and the measured test scores into a model's card.

The second step of the built-in model's recipe, after ``train_builtin_model.sh``: the
post-processing thresholds come from ``tune_postprocessing.py`` (validation images only), the
scores from ``score_builtin_model.sh`` (the test images). The weights are not changed.

Usage: python scripts/finalize_builtin_model.py MODEL --seed-threshold T --foreground-threshold F
       --min-size N [--test-csv unet.csv --baseline-csv otsu.csv]
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


def median_diameter(folder: Path) -> float:
    """Median equivalent diameter (px) of all annotated objects in a folder of label TIFFs."""
    import numpy as np
    import tifffile
    from skimage.segmentation import relabel_sequential

    from napari_unet.training.data.pairs import object_diameters

    diameters = [
        object_diameters(relabel_sequential(tifffile.imread(p))[0])
        for p in sorted(folder.glob("*.tif"))
    ]
    return round(float(np.median(np.concatenate(diameters))), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--seed-threshold", type=float, required=True)
    p.add_argument("--foreground-threshold", type=float, required=True)
    p.add_argument("--min-size", type=int, required=True)
    p.add_argument("--split", type=float, default=0.0, help="seed split height (pixels)")
    p.add_argument(
        "--training-labels",
        type=Path,
        help="folder of the training labels: records their median object diameter in the card",
    )
    p.add_argument("--description", help="the card's description (kept when omitted)")
    p.add_argument("--test-csv", type=Path, help="`napari-unet evaluate --csv` of the model")
    p.add_argument("--baseline-csv", type=Path, help="the same for the Otsu baseline")
    args = p.parse_args()
    model = load_model(args.model)
    model.card["postprocessing"] = {
        "seed_threshold": args.seed_threshold,
        "foreground_threshold": args.foreground_threshold,
        "split": args.split,
        "min_size": args.min_size,
    }
    if args.description:
        model.card["description"] = args.description
    if args.training_labels is not None:
        model.card["object_diameter"] = median_diameter(args.training_labels)
    if args.test_csv is not None and args.baseline_csv is not None:
        model.card["metrics"] = {
            **model.card.get("metrics", {}),
            "test_set": "DSB 2018 stage-1 test, 49 fluorescence images (the 4 duplicates of "
            "training images excluded); mean over images; AP = TP/(TP+FP+FN)",
            "test": mean_row(args.test_csv),
            "baseline_otsu_watershed_test": mean_row(args.baseline_csv),
        }
    save_model(model, args.model, half=True)
    print(f"updated the card of {args.model}")


if __name__ == "__main__":
    main()
