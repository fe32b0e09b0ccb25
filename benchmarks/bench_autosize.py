"""Cost of the automatic object size (not part of the test suite); prints ratios from one run.

Usage (from the repository root)::

    python benchmarks/bench_autosize.py [--repeats 5] [--threads 2]

Times ``segment(image)`` (``diameter="auto"``, the default) against
``segment(image, diameter=None)`` with the built-in model, alternating, best of ``--repeats``:

* ``sample``: the bundled sample (nuclei already in the model's range: the measuring pass is
  reused as the prediction, so the ratio should be close to 1);
* ``tiled``: the sample tiled 2x2 (512x512, still one measuring crop);
* ``zoomed``: the sample's top-left quarter zoomed 4x (512x512, nuclei ~55 px: resampled, so
  the auto run predicts the crop for measuring, then the resampled image).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_unet import load_model, segment
from napari_unet.common.sample import load_sample
from napari_unet.inference.sizing.rescale import resample


def best_of(fns: dict, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times.setdefault(name, []).append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None)
    image, _ = load_sample()
    images = {
        "sample": image,
        "tiled": np.tile(image, (2, 2)),
        "zoomed": resample(image[: image.shape[0] // 2, : image.shape[1] // 2], (4, 4), order=1),
    }
    for name, img in images.items():
        segment(img, model, device="cpu")  # warm up
        t = best_of(
            {
                "auto": lambda img=img: segment(img, model, device="cpu"),
                "none": lambda img=img: segment(img, model, diameter=None, device="cpu"),
            },
            args.repeats,
        )
        print(
            f"RESULT {name} {img.shape}: auto / none time {t['auto'] / t['none']:.2f} "
            f"({t['auto']:.3f} s vs {t['none']:.3f} s, best of {args.repeats})",
            flush=True,
        )


if __name__ == "__main__":
    main()
