"""How far default-tiled inference is from one whole-image pass (not part of the test suite).

Usage (from the repository root)::

    python benchmarks/bench_seams.py [--data ../shared/data/dsb2018_fluo] [--threads 2]

With the built-in model, for overlaps of 32 px (the default), 64, 96, 128 and 214 px (twice
the receptive field: exact), prints the largest difference of the class probabilities from a
whole-image pass, the pixels that change between foreground and background, and the AP@0.5 of
the tiled labels against the whole-image ones, on

* ``mosaic``: the bundled sample tiled 6x5 and cropped to 1536x1600 (2x2 tiles), whose copy
  border at row 780 falls in the tiles' overlap: a sharp edge at a tile border, the worst case;
* ``real``: the 1040x1388 images of the DSB training folder (one tile in Y, two in X).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet import load_model
from napari_unet.common.sample import load_sample
from napari_unet.inference.normalize import normalize
from napari_unet.inference.postprocess import instance_labels
from napari_unet.inference.predict import predict_tiled
from napari_unet.metrics import average_precision

OVERLAPS = (32, 64, 96, 128, 214)


def compare(model, image: np.ndarray, name: str) -> None:
    x = normalize(image[None].astype(np.float32), model.card["normalization"], channel_axis=0)
    whole_tile = tuple(-(-n // 16) * 16 for n in image.shape)  # one tile: the whole image
    whole = predict_tiled(model, x, device="cpu", tile_shape=whole_tile)
    post = model.card["postprocessing"]
    whole_labels = instance_labels(whole, **post)
    for overlap in OVERLAPS:
        tiled = predict_tiled(model, x, device="cpu", overlap=overlap)
        labels = instance_labels(tiled, **post)
        flipped = int(((labels > 0) != (whole_labels > 0)).sum())
        ap = average_precision(whole_labels, labels).scores[0]
        print(
            f"RESULT {name} {image.shape} overlap {overlap}: max |p_tiled - p_whole| "
            f"{np.abs(tiled - whole).max():.3f}, fg/bg changed {flipped} of {image.size} px, "
            f"AP@0.5 vs whole {ap:.4f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_fluo"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None)
    sample, _ = load_sample()
    compare(model, np.tile(sample, (6, 5))[:1536, :1600], "mosaic")
    for path in sorted((args.data / "images").glob("*.tif")):
        image = tifffile.imread(path)
        if image.shape[:2] == (1040, 1388):
            compare(model, image if image.ndim == 2 else image[..., 0], f"real {path.stem}")


if __name__ == "__main__":
    main()
