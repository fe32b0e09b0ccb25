"""``napari-unet export MODEL -o NAME.zip``: a model as a BioImage.IO package."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model as a BioImage.IO (bioimage.io model zoo) package",
        description="Write a model as a BioImage.IO model package (spec 0.5 zip: torchscript "
        "and pytorch_state_dict weights, test tensors from real data, cover, README, "
        "citations), tested with bioimageio.core.test_model before it is written. Needs "
        "napari-unet[bioimageio].",
    )
    p.add_argument(
        "model", metavar="MODEL", help="a .safetensors model file, or 'nuclei' (built-in)"
    )
    p.add_argument("-o", "--output", required=True, metavar="NAME.zip", help="the package file")
    p.add_argument("--name", help="model name (default: the model card's)")
    p.add_argument("--description", help="one-paragraph description (default: the card's)")
    p.add_argument(
        "--author",
        action="append",
        metavar="NAME",
        help="an author (repeat for several; default: the card's, or your user name)",
    )
    p.add_argument("--license", default="BSD-3-Clause", help="SPDX license id of the weights")
    p.add_argument("--training-data", metavar="TEXT", help="what the model was trained on")
    p.add_argument("--overwrite", action="store_true", help="replace the package file if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..common.outputs import check_output_file
    from ..zoo.export import export_bioimageio

    # before any work (the export takes half a minute): a .zip name, free or --overwrite, in a
    # folder that can be written
    check_output_file(args.output, "-o/--output", overwrite=args.overwrite, suffixes=(".zip",))
    path = export_bioimageio(
        args.model,
        args.output,
        name=args.name,
        description=args.description,
        authors=args.author,
        license=args.license,
        training_data=args.training_data,
    )
    print(path)
    return 0
