"""Collect the fluorescence images of the DSB 2018 stage-1 test set, minus the duplicates.

Writes symbolic links ``OUT/images/<id>.tif`` and ``OUT/labels/<id>.tif`` for the 53
fluorescence images of ``../shared/data/dsb2018_stage1_test`` without the 4 ids listed in
``exclude_duplicates_of_train.txt`` (same field of view as training images): 49 images.

Usage: python scripts/prepare_test_split.py OUT [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data")
    args = parser.parse_args()
    root = args.data / "dsb2018_stage1_test"
    excluded = set((root / "exclude_duplicates_of_train.txt").read_text().split())
    with open(root / "manifest.csv") as f:
        ids = [
            r["id"]
            for r in csv.DictReader(f)
            if r["modality"] == "fluorescence" and r["id"] not in excluded
        ]
    for kind in ("images", "labels"):
        (args.out / kind).mkdir(parents=True, exist_ok=True)
        for i in ids:
            link = args.out / kind / f"{i}.tif"
            if not link.exists():
                link.symlink_to((root / kind / f"{i}.tif").resolve())
    print(f"{len(ids)} fluorescence test images in {args.out}")


if __name__ == "__main__":
    main()
