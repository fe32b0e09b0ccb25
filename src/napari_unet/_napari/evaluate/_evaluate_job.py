"""The Evaluate dock's worker job: score arrays, yield per-slice progress, return the result.

It gets arrays, never layers (:func:`layer_array` reads them on the GUI thread).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def layer_array(layer: Any) -> Any:
    """A layer's data as one array (level 0 of a multiscale layer), numpy or dask."""
    return layer.data[0] if layer.multiscale else layer.data


def evaluate_job(job: dict[str, Any]):
    """Worker body: evaluate ``job`` (arrays only), yield per-slice progress, return the result."""
    from ...evaluation.pairs import iter_evaluate_pair

    job = dict(job)
    gt, pred = np.asarray(job.pop("ground_truth")), np.asarray(job.pop("prediction"))
    region = job.pop("region")
    region = None if region is None else np.asarray(region) != 0
    gen = iter_evaluate_pair(gt, pred, region=region, errors=True, **job)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if event.done:
            yield event
