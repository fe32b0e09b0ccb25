"""``napari-unet info MODEL``: the model card and the layer summary."""

from __future__ import annotations

import argparse
import json

from ._args import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show a model file's card and layer summary",
        description="Print the model card and the layer summary (output shape and parameter "
        "count per layer, total) of a model file.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a .safetensors model file, or 'nuclei' for the built-in model",
    )
    p.add_argument(
        "--shape",
        type=positive_int,
        nargs="+",
        metavar="N",
        help="input spatial shape for the summary (default: 256 per axis, or the nearest valid size)",
    )
    p.add_argument("--json", action="store_true", help="print the model card as JSON only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..model.files import load_model
    from ..model.summary import count_parameters, format_summary, layer_summary

    model = load_model(args.model)
    if args.json:
        print(json.dumps({"architecture": model.config.to_dict(), **model.card}, indent=2))
        return 0
    shape = tuple(args.shape) if args.shape else _default_shape(model)
    rows = layer_summary(model, shape)  # checks the shape before anything is printed
    print(format_card(model))
    print()
    print(f"Layer summary for input shape (1, {model.in_channels}, {', '.join(map(str, shape))}):")
    print(format_summary(rows, count_parameters(model)))
    return 0


def _default_shape(model) -> tuple[int, ...]:
    size = model.valid_sizes_near(256)[1]
    return (size,) * model.ndim


def format_card(model) -> str:
    """The model card as readable ``key: value`` lines."""
    card = model.card
    arch = ", ".join(f"{k}={v!r}" for k, v in model.config.to_dict().items())
    lines = [
        f"Model: {card.get('name', 'unet')}",
        f"Description: {card.get('description') or '-'}",
        f"Architecture: UNet({arch})",
        f"Task: {card.get('task')}  classes: {', '.join(card.get('class_names', []))}",
        f"Input: axes {card.get('input', {}).get('axes')}, {model.in_channels} channel(s)",
        f"Normalisation: {json.dumps(card.get('normalization'))}",
    ]
    for key in ("metrics", "provenance"):
        value = card.get(key)
        if value:
            lines.append(f"{key.capitalize()}:")
            lines.extend(f"  {k}: {json.dumps(v)}" for k, v in value.items())
    extra = {
        k: v
        for k, v in card.items()
        if k
        not in {
            "name",
            "description",
            "task",
            "class_names",
            "input",
            "normalization",
            "metrics",
            "provenance",
        }
    }
    lines.extend(f"{k}: {json.dumps(v)}" for k, v in extra.items())
    return "\n".join(lines)
