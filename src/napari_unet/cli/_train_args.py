"""The options of ``napari-unet train``: data, network, training, outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import non_negative, non_negative_int, number, positive, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``napari-unet train``."""
    p.add_argument(
        "--images", required=True, type=Path, metavar="DIR", help="folder of training images"
    )
    p.add_argument(
        "--labels", required=True, type=Path, metavar="DIR", help="folder of training labels"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="MODEL",
        help="model file to write (.safetensors)",
    )
    p.add_argument("--val-images", type=Path, metavar="DIR", help="folder of validation images")
    p.add_argument("--val-labels", type=Path, metavar="DIR", help="folder of validation labels")
    p.add_argument(
        "--val-fraction",
        type=number(minimum=0, maximum=1, high_open=True),
        default=0.1,
        help="fraction held out for validation without --val-images (default 0.1)",
    )
    p.add_argument("--task", choices=("instance", "semantic"), default="instance")
    p.add_argument(
        "--ndim",
        type=int,
        choices=(2, 3),
        default=None,
        help="2D or 3D network (default: 3 when the label files are Z stacks, else 2)",
    )
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        default=None,
        help="batches per epoch (default: from the data size)",
    )
    p.add_argument(
        "--patch",
        type=positive_int,
        nargs="+",
        default=[128],
        metavar="N",
        help="patch size: one size for every spatial axis, or one per axis, e.g. "
        "--patch 16 128 128 for anisotropic Z stacks (default 128)",
    )
    p.add_argument(
        "--batch", type=positive_int, default=8, metavar="N", help="batch size (default 8)"
    )
    p.add_argument(
        "--depth", type=number(integer=True, minimum=0, maximum=8), default=4, metavar="D"
    )
    p.add_argument("--base-filters", type=positive_int, default=16, metavar="F")
    p.add_argument(
        "--lr",
        type=positive,
        default=None,
        help="peak learning rate (default 1e-3; with --init 1e-4: a fine-tune at 1e-3 forgets "
        "what the model knew)",
    )
    p.add_argument(
        "--ignore-label", type=int, default=None, help="label value of unannotated pixels"
    )
    p.add_argument("--no-augment", action="store_true", help="switch data augmentation off")
    p.add_argument(
        "--update-norm-statistics",
        action="store_true",
        help="with --init: let the fine-tune replace the batch-norm statistics (default: kept, "
        "so a few images do not overwrite statistics gathered over the parent's training set; "
        "update them for a new kind of input with many images, e.g. a new stain)",
    )
    p.add_argument(
        "--no-contact-weight",
        action="store_true",
        help="instance task: weight only the background gaps between objects, as the U-Net "
        "paper does, not the rims where objects touch",
    )
    p.add_argument(
        "--w0",
        type=non_negative,
        default=10.0,
        help="instance task: strength of the border weight between objects (U-Net paper: 10)",
    )
    p.add_argument(
        "--zoom",
        type=positive,
        nargs=2,
        default=(0.75, 1.33),
        metavar=("LOW", "HIGH"),
        help="range of random scale augmentation (default 0.75 1.33); widen it (e.g. 0.5 2) "
        "for a model that must handle several magnifications",
    )
    p.add_argument(
        "--stain-jitter",
        type=non_negative,
        default=None,
        metavar="STD",
        help="multichannel input: mix the channels at random, each weight off the identity by "
        "N(0, STD) (e.g. 0.1 for stained slides whose colours vary between labs; default: "
        "what the --init model learnt with, else 0)",
    )
    p.add_argument(
        "--blur",
        type=number(minimum=0, maximum=1),
        default=None,
        metavar="P",
        help="probability of blurring a patch (Gaussian, sigma 0.5-1.5 px), for out-of-focus "
        "regions (default: what the --init model learnt with, else 0)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument(
        "--workers",
        default="auto",
        metavar="N",
        help="processes that prepare batches in the background (default auto: none on the "
        "CPU, up to 8 with a GPU); the result does not depend on it",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="resume checkpoint to write (default: MODEL with .ckpt)",
    )
    p.add_argument(
        "--resume", type=Path, default=None, metavar="CKPT", help="continue from this checkpoint"
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="MODEL",
        help="fine-tune: start from this model file, a BioImage.IO package that napari-unet "
        "exported, or 'nuclei' for the built-in model "
        "(its architecture and normalisation are kept; --depth/--base-filters are ignored)",
    )
    p.add_argument(
        "--object-diameter",
        default="auto",
        metavar="PX|auto|none",
        help="instance task: the object size (pixels across) the network works at; each image "
        "is resampled so its objects' median size matches it, and Segment resamples new images "
        "to it. auto (default): the --init model's size, else the training objects' median; "
        "none: train at the images' own sizes",
    )
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="instance task: keep the default post-processing instead of choosing it on the "
        "validation images after training (a few seconds)",
    )
    p.add_argument("--name", default=None, help="model name for the card")
    p.add_argument("--description", default="", help="model description for the card")
    p.add_argument(
        "--half", action="store_true", help="store the weights as float16 (half the file size)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-batch-norm", action="store_true", help="a network without batch normalisation"
    )
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        metavar="N",
        help="train data-parallel in N processes on this machine (at most one per GPU, or one "
        "per CPU core): launches `torchrun --nproc-per-node N -m napari_unet train ...`; "
        "--batch is the global batch (a multiple of N). Across machines, call torchrun yourself",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing model file, and start over from an existing checkpoint",
    )
