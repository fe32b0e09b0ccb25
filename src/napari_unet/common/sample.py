"""The bundled sample: a real fluorescence nuclei image with its annotation.

Image ``699f2992…`` of the 2018 Data Science Bowl stage-1 test set (BBBC038, Caicedo et al.,
Nature Methods 16, 2019; CC0): 260x347 uint8, 129 annotated nuclei. It is not in the data the
built-in model was trained on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

SAMPLE_ID = "699f2992cd71e2e28cf45f81347ff22e76b37541ce88087742884cd0e9aadc68"


def sample_paths() -> tuple[Path, Path]:
    """Paths of the sample image and its instance labels inside the package."""
    root = resources.files("napari_unet") / "data"
    return Path(str(root / "nuclei.tif")), Path(str(root / "nuclei_labels.tif"))


def load_sample() -> tuple[np.ndarray, np.ndarray]:
    """The sample image ``(Y, X)`` uint8 and its instance labels ``(Y, X)`` uint16."""
    import tifffile

    image_path, labels_path = sample_paths()
    return tifffile.imread(image_path), tifffile.imread(labels_path)
