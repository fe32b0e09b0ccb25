"""Fit a model's object-size estimate on annotated images and store it in its card.

The weights are not changed: the ``size_model`` card entry (see
``napari_unet.training.finishing.size_fit``) is measured by showing the model crops of the images
zoomed to a range of object sizes. Training fits it at the end of every run; this script gives
it to a model trained before that (the built-in model's recipe runs it on the training
images).

Usage: python scripts/fit_size_model.py MODEL --images DIR --labels DIR [--max-pairs 32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile

from napari_unet import load_model, save_model
from napari_unet.training.data.pairs import prepare_pair
from napari_unet.training.finishing.size_fit import fit_size_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--images", type=Path, required=True, help="folder of image TIFFs")
    p.add_argument("--labels", type=Path, required=True, help="instance labels, same names")
    p.add_argument("--max-pairs", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--half", action="store_true", help="store float16 weights (built-in model)")
    args = p.parse_args()
    model = load_model(args.model)
    files = sorted(args.images.glob("*.tif"))
    if len(files) > args.max_pairs:  # preparing a pair (border weights) costs; pick first
        pick = np.random.default_rng(args.seed).choice(len(files), args.max_pairs, replace=False)
        files = [files[i] for i in sorted(pick)]
    pairs = [
        prepare_pair(tifffile.imread(f), tifffile.imread(args.labels / f.name), name=f.stem)
        for f in files
    ]
    entry = fit_size_model(
        model,
        pairs,
        object_diameter=model.card.get("object_diameter"),
        max_pairs=args.max_pairs,
        seed=args.seed,
    )
    if entry is None:
        raise SystemExit("could not fit a size model (see the log)")
    model.card["size_model"] = entry
    save_model(model, args.model, half=args.half)
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
