"""Time the metrics on a 4096x4096 pair with about 10,000 objects.

Run: ``python benchmarks/bench_metrics.py``. Prints one line per measurement.
"""

from __future__ import annotations

import time

import numpy as np

from napari_unet import metrics
from napari_unet.evaluation.pairs import evaluate_pair


def make_pair(size: int = 4096, cell: int = 41, seed: int = 0, big_ids: bool = False):
    """Ground truth: one ellipse per grid cell; prediction: shifted, 5% dropped, new ids."""
    rng = np.random.default_rng(seed)
    n = size // cell
    yy, xx = np.mgrid[:cell, :cell] - cell // 2
    gt = np.zeros((size, size), np.int64)
    pred = np.zeros_like(gt)
    ids = (
        rng.choice(2**31 - 1, size=2 * n * n, replace=False) + 1
        if big_ids
        else np.arange(1, 2 * n * n + 1)
    )
    for k in range(n * n):
        i, j = divmod(k, n)
        ry, rx = rng.uniform(8, 19, size=2)
        disk = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1
        sl = (slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell))
        gt[sl][disk] = k + 1
        if rng.random() > 0.05:
            shifted = np.roll(disk, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
            pred[sl][shifted] = ids[n * n + k]
    return gt, pred


def bench(label: str, fn, *args, **kwargs) -> None:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t0
    summary = getattr(out, "mean", None) or getattr(out, "tp", None) or out
    print(
        f"{label:<45s} {dt:7.2f} s   -> {summary if np.isscalar(summary) else type(out).__name__}"
    )


def main() -> None:
    for big in (False, True):
        gt, pred = make_pair(big_ids=big)
        tag = "ids up to 2**31" if big else "ids 1..20000"
        print(
            f"4096x4096, {len(np.unique(gt)) - 1} true / {len(np.unique(pred)) - 1} predicted objects, {tag}"
        )
        bench("  dice (binary)", metrics.dice, gt, pred)
        bench("  match_instances (IoU > 0.5)", metrics.match_instances, gt, pred)
        bench("  match_instances (IoU > 0.1, optimal LSA)", metrics.match_instances, gt, pred, 0.1)
        bench("  average_precision (10 thresholds)", metrics.average_precision, gt, pred)
        bench("  evaluate_pair (+ error map)", evaluate_pair, gt, pred, errors=True)


if __name__ == "__main__":
    main()
