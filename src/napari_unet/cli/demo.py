"""``napari-unet demo``: segment the bundled sample with the built-in model and score it.

Prints a short summary: the run's scores beside the README's reference figures for the same
image and model, and one line on what good looks like. ``--all`` prints every metric too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: columns of the full table (``--all``; ``napari-unet evaluate --csv`` has every column)
COLUMNS = (
    "image", "n_true", "n_pred", "pixel_precision", "pixel_recall", "pixel_iou", "pixel_dice",
    "precision", "recall", "f1", "panoptic_quality", "ap@0.50", "ap@0.75", "ap",
)  # fmt: skip
#: the README's figures for the built-in model on the bundled sample (section "Quality": "On the
#: bundled sample (`napari-unet demo`) it finds 113 of 129 nuclei, pixel Dice 0.864, AP@0.5
#: 0.741"); tests/test_demo.py checks that the README still says so
README_SAMPLE = {"n_pred": 113, "pixel_dice": 0.864, "ap@0.50": 0.741}
#: the README's figures for the built-in model over the 49 DSB 2018 stage-1 test fluorescence
#: images (the "Quality" table)
README_DSB = {"pixel_dice": 0.904, "ap@0.50": 0.800, "ap": 0.558}
#: the summary's rows: (record key, what it is, format)
SUMMARY_ROWS = (
    ("n_pred", "nuclei found", "{:.0f}"),
    ("pixel_dice", "pixel Dice", "{:.3f}"),
    ("ap@0.50", "AP@0.5", "{:.3f}"),
    ("ap", "mean AP 0.5:0.95", "{:.3f}"),
)
#: a score this far from the README's (same model, same image) is flagged
TOLERANCE = 0.02
#: how to read the scores, after the verdict
SCALE = (
    "AP@0.5 = TP / (TP + FP + FN) with objects matched at IoU > 0.5, 1 is perfect; over the "
    "49 DSB test images the built-in model scores AP@0.5 {ap:.3f}, mean AP {map:.3f}"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="segment the bundled sample image and print its scores",
        description="Segment the bundled nuclei sample (DSB 2018 stage-1 test image, 129 "
        "annotated nuclei, not used in training) with the built-in model (or --model) and print "
        "its scores against the annotation beside the README's figures: nuclei found, pixel "
        "Dice, AP at IoU 0.5 and the mean AP over 0.5:0.95 (--all: every metric).",
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
        "--all", action="store_true", help="also print every metric (pixel, object, AP, PQ)"
    )
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
    n_true = len(set(truth.ravel().tolist())) - 1
    print(
        f"sample: DSB 2018 stage-1 test image {SAMPLE_ID[:8]}, {image.shape[0]}x{image.shape[1]}, "
        f"{n_true} annotated nuclei",
        file=sys.stderr,
    )
    start = time.perf_counter()
    labels = segment(image, args.model, device=args.device, progress=not args.quiet)
    seconds = time.perf_counter() - start
    if args.output is not None:
        from .segment import write_tiff_atomic

        write_tiff_atomic(args.output, labels)
    record = evaluate_pair(truth, labels, image="sample").records[-1]
    model = "the built-in nuclei model" if args.model is None else Path(args.model).name
    print(f"segmented in {seconds:.1f} s with {model}; scores against the annotation:")
    print(summary(record, n_true, builtin=args.model is None))
    if getattr(args, "all", False):
        print(format_table([record], [c for c in COLUMNS if c in record]))
    return 0


def summary(record: dict, n_true: int, *, builtin: bool = True) -> str:
    """The run's scores beside the README's, and what good looks like (a few lines).

    Parameters
    ----------
    record : dict
        The evaluation record of the sample (:func:`~napari_unet.evaluation.pairs.evaluate_pair`).
    n_true : int
        Annotated nuclei.
    builtin : bool
        Whether the built-in model made the labels (the README's figures are for it).
    """
    reference = "README" if builtin else "README (built-in)"
    lines = [f"  {'':<24}{'this run':>10}{reference:>19}"]
    differ = []
    for key, name, fmt in SUMMARY_ROWS:
        label = f"{name} (of {n_true})" if key == "n_pred" else name
        ours = fmt.format(record[key])
        theirs = fmt.format(README_SAMPLE[key]) if key in README_SAMPLE else "-"
        flag = ""
        if key in README_SAMPLE and key != "n_pred":
            if abs(record[key] - README_SAMPLE[key]) > TOLERANCE:
                differ.append(name)
                flag = "  differs" if builtin else ""
        lines.append(f"  {label:<24}{ours:>10}{theirs:>19}{flag}")
    if not builtin:
        verdict = "another model: the README's figures are the built-in model's, for comparison"
    elif differ:
        verdict = (
            f"NOT as expected: {', '.join(differ)} more than {TOLERANCE} from the README's with "
            "the same model and image; check the installation (napari-unet info nuclei)"
        )
    else:
        verdict = f"good: each score within {TOLERANCE} of the README's (same model, same image)"
    scale = SCALE.format(ap=README_DSB["ap@0.50"], map=README_DSB["ap"])
    lines.append(f"{verdict}; {scale}")
    return "\n".join(lines)
