"""Record in a model's card which colour input it takes (``colour_input``).

``napari-unet segment`` (and ``segment()``) routes stained colour images to a model whose card
says ``"colour_input"`` and feeds it the input it was trained on: ``"optical_density"``
(:func:`napari_unet.inference.images.modality.optical_density`, 3 channels) or ``"haematoxylin"``
(:func:`napari_unet.inference.images.modality.haematoxylin`, 1 channel).

Usage: python scripts/mark_colour_input.py MODEL.safetensors optical_density|haematoxylin
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_unet import load_model, save_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("colour_input", choices=["haematoxylin", "optical_density"])
    args = p.parse_args()
    model = load_model(args.model)
    model.card["colour_input"] = args.colour_input
    model.card["modality"] = "H&E"
    model.card["input"] = {"axes": "CYX" if model.in_channels > 1 else "YX",
                           "channels": model.in_channels}  # fmt: skip
    save_model(model, args.model, half=True)
    print(f"{args.model}: colour_input {args.colour_input}")


if __name__ == "__main__":
    main()
