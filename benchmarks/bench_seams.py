"""How far default-tiled inference is from one whole-image pass (not part of the test suite).

Usage (from the repository root)::

    python benchmarks/bench_seams.py [--data ../shared/data/dsb2018_fluo] [--threads 2]
                                     [--overlaps 32 64 96 128 214] [--limit N]

With the built-in model, for overlaps of 32 px (the default), 64, 96, 128 and 214 px (twice
the receptive field: exact), prints the largest difference of the class probabilities from a
whole-image pass, the pixels that change between foreground and background, and the average
precision of the tiled labels against the whole-image ones at IoU 0.5 and 0.75 and its mean
over 0.5:0.95 (the DSB metric), on

* ``mosaic``: the bundled sample tiled 6x5 and cropped to 1536x1600 (2x2 tiles), whose copy
  border at row 780 falls in the tiles' overlap: a sharp edge at a tile border, the worst case;
* ``real``: the 1040x1388 images of the DSB training folder (one tile in Y, two in X; the
  first ``--limit`` of them in name order, all by default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet import load_model
from napari_unet.common.sample import load_sample
from napari_unet.inference.images.normalize import normalize
from napari_unet.inference.labels.postprocess import instance_labels
from napari_unet.inference.tiling.predict import predict_tiled
from napari_unet.metrics import average_precision

OVERLAPS = (32, 64, 96, 128, 214)
#: the DSB metric's IoU thresholds: 0.50, 0.55, ..., 0.95 (index 0: AP@0.5, index 5: AP@0.75)
THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def compare(model, image: np.ndarray, name: str, overlaps=OVERLAPS) -> None:
    x = normalize(image[None].astype(np.float32), model.card["normalization"], channel_axis=0)
    whole_tile = tuple(-(-n // 16) * 16 for n in image.shape)  # one tile: the whole image
    whole = predict_tiled(model, x, device="cpu", tile_shape=whole_tile)
    post = model.card["postprocessing"]
    whole_labels = instance_labels(whole, **post)
    for overlap in overlaps:
        tiled = predict_tiled(model, x, device="cpu", overlap=overlap)
        labels = instance_labels(tiled, **post)
        flipped = int(((labels > 0) != (whole_labels > 0)).sum())
        ap = average_precision(whole_labels, labels, THRESHOLDS)
        print(
            f"RESULT {name} {image.shape} overlap {overlap}: max |p_tiled - p_whole| "
            f"{np.abs(tiled - whole).max():.3f}, fg/bg changed {flipped} of {image.size} px, "
            f"vs whole: AP@0.5 {ap.scores[0]:.4f}, AP@0.75 {ap.scores[5]:.4f}, "
            f"mean AP {ap.mean:.4f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_fluo"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--overlaps", type=int, nargs="+", default=list(OVERLAPS))
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N real images (0: mosaic only)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None)
    sample, _ = load_sample()
    compare(model, np.tile(sample, (6, 5))[:1536, :1600], "mosaic", args.overlaps)
    done = 0
    for path in sorted((args.data / "images").glob("*.tif")):
        if args.limit is not None and done >= args.limit:
            break
        image = tifffile.imread(path)
        if image.shape[:2] == (1040, 1388):
            image = image if image.ndim == 2 else image[..., 0]
            compare(model, image, f"real {path.stem}", args.overlaps)
            done += 1


if __name__ == "__main__":
    main()
