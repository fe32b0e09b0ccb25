"""``napari-unet info MODEL``: the model card and the layer summary (of a file or a package)."""

from __future__ import annotations

import argparse
import json

from ._args import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show a model file's card and layer summary",
        description="Print the model card and the layer summary (output shape and parameter "
        "count per layer, total) of a model file; for a BioImage.IO package, also what it "
        "holds and which of its weights napari-unet runs.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a .safetensors model file, a BioImage.IO package (.zip), or 'nuclei' for the "
        "built-in model",
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
    from ..zoo.package import is_package

    if is_package(args.model):
        return _package(args)
    _print_model(load_model(args.model), args)
    return 0


def _print_model(model, args: argparse.Namespace, header: dict | None = None) -> None:
    """The card (after the package's ``header`` lines) and the layer summary of a UNet."""
    from ..model.summary import count_parameters, format_summary, layer_summary

    if args.json:
        extra = {"bioimageio": header} if header else {}
        card = {"architecture": model.config.to_dict(), **model.card, **extra}
        print(json.dumps(card, indent=2))
        return
    shape = tuple(args.shape) if args.shape else _default_shape(model)
    rows = layer_summary(model, shape)  # checks the shape before anything is printed
    if header:
        print(format_package(header))
    print(format_card(model))
    print()
    print(f"Layer summary for input shape (1, {model.in_channels}, {', '.join(map(str, shape))}):")
    print(format_summary(rows, count_parameters(model)))


def _package(args: argparse.Namespace) -> int:
    """A BioImage.IO package: what it holds; napari-unet's own U-Net also as a model file."""
    from ..zoo.package import load_package, read_description, runnable_formats

    descr = read_description(args.model)  # checked: nothing outside it, no code, no bomb
    formats = runnable_formats(descr)
    header = {
        "name": descr.name,
        "format_version": str(descr.format_version),
        "inputs": {str(t.id): [_axis(a) for a in t.axes] for t in descr.inputs},
        "outputs": {str(t.id): [_axis(a) for a in t.axes] for t in descr.outputs},
        "weights": formats,
    }
    if formats.get("pytorch_state_dict") == "ok":  # napari-unet's UNet: card and layers
        _print_model(load_package(args.model, weights="pytorch_state_dict"), args, header)
    elif args.json:
        print(json.dumps({"bioimageio": header}, indent=2))
    else:
        print(format_package(header))
        print(f"Description: {descr.description or '-'}")
    return 0


def _axis(axis) -> str:
    return str(getattr(axis, "id", None) or getattr(axis, "type", "?"))


def format_package(header: dict) -> str:
    """What a package holds, as ``key: value`` lines."""

    def tensors(d: dict) -> str:
        return ", ".join(f"{k} ({', '.join(v)})" for k, v in d.items())

    weights = "; ".join(
        f"{k} ({'runs here' if v == 'ok' else v})" for k, v in header["weights"].items()
    )
    return "\n".join(
        [
            f"BioImage.IO model package: {header['name']} (format {header['format_version']})",
            f"Inputs: {tensors(header['inputs'])}; outputs: {tensors(header['outputs'])}",
            f"Weights: {weights}",
        ]
    )


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
