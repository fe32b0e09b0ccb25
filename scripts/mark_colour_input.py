"""Record in a model's card which colour input it takes (``colour_input``).

``napari-unet segment`` (and ``segment()``) routes stained colour images to a model whose card
says ``"colour_input": "haematoxylin"`` and feeds it the haematoxylin channel
(:func:`napari_unet.inference.modality.haematoxylin`), the input it was trained on.

Usage: python scripts/mark_colour_input.py MODEL.safetensors haematoxylin
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_unet import load_model, save_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("colour_input", choices=["haematoxylin"])
    args = p.parse_args()
    model = load_model(args.model)
    model.card["colour_input"] = args.colour_input
    model.card["modality"] = "H&E"
    save_model(model, args.model, half=True)
    print(f"{args.model}: colour_input {args.colour_input}")


if __name__ == "__main__":
    main()
