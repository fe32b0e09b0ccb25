"""``napari-unet demo``: segment the bundled sample with the built-in model and score it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: columns of the printed table (``napari-unet evaluate --csv`` has every column)
COLUMNS = (
    "image", "n_true", "n_pred", "pixel_precision", "pixel_recall", "pixel_iou", "pixel_dice",
    "precision", "recall", "f1", "panoptic_quality", "ap@0.50", "ap@0.75", "ap",
)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="segment the bundled sample image and print its scores",
        description="Segment the bundled nuclei sample (DSB 2018 stage-1 test image, 129 "
        "annotated nuclei, not used in training) with the built-in model (or --model) and print "
        "the evaluation against its annotation: pixel precision/recall/IoU/Dice, object "
        "precision/recall/F1 and panoptic quality at IoU 0.5, AP at IoU 0.5 and 0.75 and the "
        "mean AP over 0.5:0.95.",
    )
    p.add_argument(
        "--model", default=None, help="a .safetensors model file (default: built-in nuclei model)"
    )
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="also write the labels to this TIFF"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the -o/--output file if it exists"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from ..common.outputs import check_output_file
    from ..common.sample import SAMPLE_ID, load_sample
    from ..evaluation.folders import format_table
    from ..evaluation.pairs import evaluate_pair
    from ..inference.pipeline import segment

    if args.output is not None:
        check_output_file(
            args.output, "-o/--output", overwrite=args.overwrite, suffixes=(".tif", ".tiff")
        )
    image, truth = load_sample()
    print(
        f"sample: DSB 2018 stage-1 test image {SAMPLE_ID[:8]}, {image.shape[0]}x{image.shape[1]}, "
        f"{len(set(truth.ravel().tolist())) - 1} annotated nuclei",
        file=sys.stderr,
    )
    start = time.perf_counter()
    labels = segment(image, args.model, device=args.device, progress=not args.quiet)
    seconds = time.perf_counter() - start
    if args.output is not None:
        from .segment import write_tiff_atomic

        write_tiff_atomic(args.output, labels)
    result = evaluate_pair(truth, labels, image="sample")
    print(f"segmented in {seconds:.1f} s; scores against the annotation (IoU threshold 0.5):")
    print(format_table(result.records, [c for c in COLUMNS if c in result.records[0]]))
    return 0
