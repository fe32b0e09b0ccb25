"""How far the annotations reach into each nucleus's dim halo, per kind of image (not a test).

Usage (from the repository root)::

    python benchmarks/annotation_halo.py [--per-kind 40]

For the DSB 2018 fluorescence training images (``dsb2018_fluo``, what the built-in model learnt
from) and the stage-1 test images (the 4 duplicates of training images left out), grouped by
image size (the DSB's proxy for the lab and microscope), prints the share of annotated pixels
dimmer than half their object's contrast: ``(I - background) < 0.5 * (p90 of the object -
background)``, with the background the median outside every object dilated by 3 px. A high
share means the annotator drew the outline around the dim halo; a low one, near the bright
edge. The analysis behind *Mask boundaries* in ``benchmarks/README.md`` (issue 27): the kinds
whose masks run tight are the kinds whose test annotations include the halo while the training
annotations of the same kind do not.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

import numpy as np
import tifffile
from bench_modalities import DATA, manifest
from scipy import ndimage as ndi


def halo_share(image: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of the annotated pixels dimmer than half their object's contrast.

    Parameters
    ----------
    image : ndarray, shape (Y, X)
        Grey intensities.
    labels : ndarray of int, shape (Y, X)
        Instance annotations, 0 background.

    Returns
    -------
    float or None
        None when no object is brighter than the background.
    """
    image = image.astype(float)
    objects = labels > 0
    outside = ~ndi.binary_dilation(objects, iterations=3)
    background = float(np.median(image[outside])) if outside.any() else 0.0
    dim = total = 0
    for obj_id, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        values = image[box][labels[box] == obj_id] - background
        top = np.percentile(values, 90)
        if top <= 0:
            continue
        dim += int(np.sum(values < 0.5 * top))
        total += values.size
    return dim / total if total else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=40, help="images per kind, at most")
    args = parser.parse_args()
    print("set                 kind        images  annotated pixels in the halo")
    for name in ("dsb2018_fluo", "dsb2018_stage1_test"):
        folder = DATA / name
        with open(folder / "manifest.csv") as f:
            sizes = {r["id"]: f"{r['height']}x{r['width']}" for r in csv.DictReader(f)}
        kinds: dict[str, list[float]] = defaultdict(list)
        for image_id in manifest(folder, lambda r: r["modality"] == "fluorescence"):
            kind = sizes[image_id]
            if len(kinds[kind]) >= args.per_kind:
                continue
            image = tifffile.imread(folder / "images" / f"{image_id}.tif")
            labels = tifffile.imread(folder / "labels" / f"{image_id}.tif")
            share = halo_share(image, labels)
            if share is not None:
                kinds[kind].append(share)
        for kind, shares in sorted(kinds.items()):
            print(f"{name:<19} {kind:<11} {len(shares):>6}  {np.mean(shares):.3f}")


if __name__ == "__main__":
    main()
