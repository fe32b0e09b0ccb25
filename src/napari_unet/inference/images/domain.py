"""Is this image like the model's training images? A plain warning when it is not.

A model segments what it learnt; on an image unlike its training images (brightfield given to
a fluorescence model, the wrong channel, a stain it never saw) it still returns labels, often
wrong ones. :func:`check_domain` looks at what the run saw and says so in one sentence, with
what to try. Two signals, each measured on data the run has anyway:

- **the background** of the image the network saw: for every built-in model the median of its
  input lies in the lower half between the 1st and 99.8th percentiles (bright objects on a dark
  background, see :func:`~.modality.median_position`); above :data:`~.modality.BRIGHT_BACKGROUND`
  the objects are darker than the background;
- **the network's doubt**: the share of the pixels it calls object whose object probability
  lies between :data:`DOUBT_LOW` and :data:`DOUBT_HIGH`. Confident probabilities sit near 0 or
  1; an image the network does not recognise leaves many pixels in between.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .modality import BRIGHT_BACKGROUND, InputChoice

__all__ = ["Doubt", "SegmentReport", "check_domain"]

#: object probabilities between these two are doubtful
DOUBT_LOW, DOUBT_HIGH = 0.2, 0.8
#: above this share of doubtful pixels (of the pixels called object) the image is out of domain.
#: Object rims are doubtful by nature, so small nuclei raise the share: on the 49 DSB stage-1
#: test fluorescence images it is 0.22 at the median, 0.36 at the 95th percentile, and above
#: 0.5 on one image (0.70); on the 12 H&E test images the fluorescence model on their
#: haematoxylin channel gives 0.3-0.7
MAX_DOUBT = 0.5


class Doubt:
    """Counts, frame by frame, the pixels called object and those the network doubts."""

    def __init__(self) -> None:
        self.objects = 0
        self.doubtful = 0

    def add(self, probs: np.ndarray) -> None:
        """Count one frame's probabilities ``(K, *spatial)`` (class 0: background)."""
        if probs.shape[0] < 2:
            return
        foreground = 1.0 - probs[0]
        self.objects += int(np.count_nonzero(foreground > 0.5))
        self.doubtful += int(np.count_nonzero((foreground > DOUBT_LOW) & (foreground < DOUBT_HIGH)))

    @property
    def share(self) -> float | None:
        """Doubtful pixels per pixel called object; ``None`` when nothing was counted."""
        return self.doubtful / self.objects if self.objects else None


@dataclass(frozen=True)
class SegmentReport:
    """What a segmentation decided and found, for the CLI line, the dock and the metadata.

    Attributes
    ----------
    choice : InputChoice
        Axes, channel, colour handling, inversion and model, with the reasons.
    objects : int or None
        The number of objects (instance output of an in-memory image), else ``None``.
    diameter : float or None
        The object diameter measured or given (pixels of the image).
    scale : float
        The resampling factor the model worked at.
    background : float
        The median position of the network's input (0 dark background, 1 bright).
    doubt : float or None
        Share of the pixels called object whose probability the network doubts.
    warning : str or None
        Why the image looks out of the model's domain, and what to try; ``None`` when it does
        not.
    """

    choice: InputChoice
    objects: int | None = None
    diameter: float | None = None
    scale: float = 1.0
    background: float = 0.0
    doubt: float | None = None
    warning: str | None = None

    def as_metadata(self) -> dict[str, Any]:
        """A plain dict (JSON-able) for a layer's metadata."""
        out = asdict(self)
        out["choice"] = self.choice.as_metadata()
        return out


#: lag-1 correlation of neighbouring pixels below which an image is noise: 0.94-1.00 on the DSB
#: images (fluorescence, H&E, brightfield), about 0 for white noise
MIN_STRUCTURE = 0.5


def has_structure(canon: Any, caxes: str) -> bool:
    """Neighbouring pixels along X are correlated (r >= :data:`MIN_STRUCTURE`): not noise.

    Measured on a central crop (at most 1024 px a side) of the middle frame, channels averaged.
    """
    arr = canon
    for _ in caxes[:-2]:  # the middle of T, C and Z
        arr = arr[arr.shape[0] // 2]
    starts = [max(0, (n - 1024) // 2) for n in arr.shape]
    crop = np.asarray(arr[tuple(slice(s, s + 1024) for s in starts)], np.float64)
    crop = np.clip(crop, *np.percentile(crop, [0.1, 99.9]))  # a no-data pixel is not structure
    crop = crop - crop.mean()
    var = float((crop * crop).mean())
    if var == 0 or crop.shape[-1] < 2:
        return True  # flat: nothing to say here (normalisation handles constant images)
    return float((crop[:, 1:] * crop[:, :-1]).mean()) / var >= MIN_STRUCTURE


def check_domain(
    choice: InputChoice,
    background: float,
    doubt: float | None,
    labels_like: bool = False,
    noise: bool = False,
) -> str | None:
    """One sentence on why the image looks unlike the model's training images, or ``None``.

    Parameters
    ----------
    choice : InputChoice
        What was decided about the input (the advice depends on it).
    background : float
        :func:`~.modality.median_position` of the image the network saw.
    doubt : float or None
        :attr:`Doubt.share` of the run, ``None`` when not measured.
    labels_like : bool
        The image itself looks like a label image or a mask
        (:func:`~napari_unet.common.validate.looks_like_labels`).
    noise : bool
        Neighbouring pixels are uncorrelated (:func:`has_structure` is false).
    """
    if noise:
        return (
            "the image looks like noise: neighbouring pixels are uncorrelated, so there are no "
            "objects to find; check that this is the microscope image"
        )
    if labels_like:
        return (
            "the image looks like a label image or a mask (whole numbers, piecewise constant, "
            "with a background), not intensities: segmenting it gives nonsense; pass the "
            "microscope image instead"
        )
    tips = _tips(choice)
    if background > BRIGHT_BACKGROUND:
        return (
            f"out of domain: the objects look darker than the background (median at "
            f"{background:.2f}) but the model expects bright objects; {tips}"
        )
    if doubt is not None and doubt > MAX_DOUBT:
        return (
            f"out of domain: the model is unsure of many pixels (object probability 0.2-0.8: "
            f"{doubt:.0%} of the number it calls objects), so "
            f"this image is unlike its training images and the result may be wrong; {tips}"
        )
    return None


def _tips(choice: InputChoice) -> str:
    tips = []
    if choice.colour == "optical density":
        pass  # the colour model reads stain densities: inverting them has no meaning
    elif not choice.inverted:
        tips.append("--invert yes")
    elif choice.invert_reason != "given":
        tips.append("--invert no")
    if choice.channel is not None or choice.modality == "multichannel":
        tips.append("another --channel")
    retrain = "correct a few objects and retrain (Correct and retrain in napari)"
    return "try " + ", ".join(tips) + f", or {retrain}" if tips else f"try to {retrain}"
