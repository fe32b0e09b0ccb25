"""``napari-unet evaluate --gt DIR --pred DIR``: score predictions against annotations."""

from __future__ import annotations

import argparse
import sys

from ._args import number

_IOU = number(minimum=0, maximum=1, high_open=True)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..evaluation.metrics import DEFAULT_THRESHOLDS

    p = sub.add_parser(
        "evaluate",
        help="score predicted label images against ground-truth annotations",
        description="Match files by name (a '_labels' suffix on predictions is accepted), then "
        "print a per-image and overall table (3 decimals): foreground pixel precision, recall, "
        "IoU and Dice; object TP/FP/FN, precision, recall, F1, mean matched IoU and panoptic "
        "quality at --iou-threshold; and AP = TP/(TP+FP+FN) at each --iou-thresholds value and "
        "their mean (the Data Science Bowl 2018 score). 'mean' averages the images' scores, "
        "'pooled' scores their summed counts. --csv writes every column at full precision.",
    )
    p.add_argument(
        "--gt", required=True, metavar="PATH", help="folder (or file) of ground-truth label images"
    )
    p.add_argument(
        "--pred", required=True, metavar="PATH", help="folder (or file) of predicted label images"
    )
    p.add_argument(
        "--csv", metavar="FILE", help="write the full table (full precision) to this CSV file"
    )
    p.add_argument(
        "--iou-thresholds",
        type=_IOU,
        nargs="+",
        default=list(DEFAULT_THRESHOLDS),
        metavar="T",
        help="IoU thresholds of the AP columns (default: 0.5 0.55 ... 0.95)",
    )
    p.add_argument(
        "--iou-threshold",
        type=_IOU,
        default=0.5,
        metavar="T",
        help="IoU threshold of the TP/FP/FN, precision, recall, F1 and PQ columns (default 0.5)",
    )
    p.add_argument(
        "--task",
        choices=("instance", "semantic"),
        default="instance",
        help="instance labels (object matching) or class labels (per-class scores); default instance",
    )
    p.add_argument(
        "--axis", type=int, metavar="N", help="also score each slice/frame along this axis"
    )
    p.add_argument("--ignore-label", type=int, metavar="ID", help="ground-truth label to leave out")
    p.add_argument("--overwrite", action="store_true", help="replace the --csv file if it exists")
    p.set_defaults(func=run)


#: columns printed on stdout for the instance task (the CSV has all of them)
_INSTANCE_COLUMNS = (
    "image", "slice", "n_true", "n_pred", "pixel_precision", "pixel_recall", "pixel_iou",
    "pixel_dice", "tp", "fp", "fn", "precision", "recall", "f1", "mean_matched_iou",
    "panoptic_quality",
)  # fmt: skip


def _columns(records: list[dict], args: argparse.Namespace) -> list[str]:
    from ..evaluation.folders import columns_of

    cols = columns_of(records)
    if args.task == "instance":
        aps = [c for c in cols if c.startswith("ap@")]
        if len(aps) > 3:  # keep the table readable: first, 0.75 if there, and the mean
            aps = [aps[0], *(["ap@0.75"] if "ap@0.75" in aps[1:] else [])]
        cols = [*_INSTANCE_COLUMNS, *aps, "ap"]
    if args.axis is None:
        cols.remove("slice")
    return cols


def run(args: argparse.Namespace) -> int:
    from ..common.outputs import check_output_file
    from ..evaluation.folders import format_table, iter_evaluate_folders, write_csv

    if args.csv:  # checked before the work
        check_output_file(args.csv, "--csv", overwrite=args.overwrite)
    gen = iter_evaluate_folders(
        args.gt, args.pred, thresholds=args.iou_thresholds, iou_threshold=args.iou_threshold,
        task=args.task, axis=args.axis, ignore_label=args.ignore_label,
    )  # fmt: skip
    result = _drain(gen)
    print(format_table(result.records, _columns(result.records, args)))
    if args.task == "instance":
        print(
            f"(TP/FP/FN at IoU > {args.iou_threshold}; ap = mean of AP over {len(args.iou_thresholds)} threshold(s))"
        )
    for role, files in (("ground truth without prediction", result.unmatched_gt),
                        ("prediction without ground truth", result.unmatched_pred)):  # fmt: skip
        if files:
            print(
                f"unmatched {role} ({len(files)}): {', '.join(f.name for f in files)}",
                file=sys.stderr,
            )
    if args.csv:
        print(f"wrote {write_csv(result.records, args.csv)}", file=sys.stderr)
    return 0


def _drain(gen):
    """Run an evaluation generator with a progress bar on stderr (only on a terminal)."""
    from tqdm import tqdm

    bar = None
    try:
        while True:
            event = next(gen)
            if bar is None:
                bar = tqdm(
                    total=event.total, desc="evaluate", unit="image", disable=None, file=sys.stderr
                )
            bar.n = event.done
            bar.set_postfix_str(event.name)
    except StopIteration as stop:
        return stop.value
    finally:
        if bar is not None:
            bar.close()
