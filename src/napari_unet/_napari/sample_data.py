"""napari sample-data contribution: the bundled nuclei image and its annotation."""

from __future__ import annotations

from ..common.sample import SAMPLE_ID, load_sample


def nuclei_sample() -> list[tuple]:
    """Layer data tuples: the nuclei image and its ground-truth instance labels."""
    image, labels = load_sample()
    source = f"DSB 2018 stage-1 test image {SAMPLE_ID[:8]} (BBBC038, CC0)"
    return [
        (image, {"name": "nuclei", "metadata": {"source": source}}, "image"),
        (labels, {"name": "nuclei ground truth", "metadata": {"source": source}}, "labels"),
    ]
