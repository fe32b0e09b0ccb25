"""The Evaluate dock's words and colours: metric table, AP thresholds, error-layer legend.

Qt-free helpers: :func:`table_value` lays the evaluation records out as a table (one column per
record, one row per metric), :func:`parse_thresholds` reads the AP thresholds field, and
:data:`ERROR_COLORS` gives the error layer's values their meanings and colours.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: error-layer value -> (meaning, RGBA colour)
ERROR_COLORS: dict[int, tuple[str, tuple[float, float, float, float]]] = {
    1: ("false positive object", (1.0, 0.0, 1.0, 1.0)),  # magenta
    2: ("missed object", (0.0, 0.9, 1.0, 1.0)),  # cyan
    3: ("false positive pixels", (1.0, 0.85, 0.0, 1.0)),  # yellow
    4: ("false negative pixels", (0.25, 0.4, 1.0, 1.0)),  # blue
}
#: metrics shown in the table, one per row (the CSV export has every column at full precision)
INSTANCE_COLUMNS = (
    "slice", "n_true", "n_pred", "pixel_precision", "pixel_recall", "pixel_iou", "pixel_dice",
    "tp", "fp", "fn", "precision", "recall", "f1", "mean_matched_iou", "panoptic_quality",
)  # fmt: skip
SEMANTIC_COLUMNS = ("slice", "class", "support", "predicted", "precision", "recall", "iou", "dice")
#: metric (record key) -> (row name shown in the table, tooltip)
METRIC_NAMES: dict[str, tuple[str, str]] = {
    "n_true": ("objects in ground truth", "number of ground-truth objects"),
    "n_pred": ("objects predicted", "number of predicted objects"),
    "pixel_precision": ("pixel precision", "predicted foreground pixels that are foreground"),
    "pixel_recall": ("pixel recall", "foreground pixels that are predicted as foreground"),
    "pixel_iou": ("pixel IoU", "foreground overlap / union (Jaccard index)"),
    "pixel_dice": ("pixel Dice", "2 x foreground overlap / (predicted + true) pixels"),
    "tp": ("matched objects (TP)", "predicted objects matching a true one at the IoU threshold"),
    "fp": ("false objects (FP)", "predicted objects matching no true object"),
    "fn": ("missed objects (FN)", "true objects no predicted object matches"),
    "precision": ("precision", "TP / (TP + FP)"),
    "recall": ("recall", "TP / (TP + FN)"),
    "f1": ("object F1", "2 TP / (2 TP + FP + FN), at the IoU threshold"),
    "mean_matched_iou": ("mean IoU of matches", "mean IoU of the matched object pairs"),
    "panoptic_quality": ("panoptic quality", "F1 x mean IoU of matches (Kirillov et al. 2019)"),
    "ap": ("mean AP", "mean of AP over the AP thresholds (DSB 2018 score: 0.5:0.95)"),
    "support": ("pixels in ground truth", "pixels of this class in the ground truth"),
    "predicted": ("pixels predicted", "pixels predicted as this class"),
    "iou": ("IoU", "overlap / union of the class's pixels"),
    "dice": ("Dice", "2 x overlap / (predicted + true) pixels of the class"),
}


def metric_name(key: str) -> str:
    """The table's row name of the record key ``key`` (``"ap@0.50"`` -> ``"AP@0.50"``)."""
    if key.startswith("ap@"):
        return "AP@" + key[3:]
    return METRIC_NAMES.get(key, (key, ""))[0]


def metric_tooltip(key: str) -> str:
    """What the metric ``key`` means."""
    if key.startswith("ap@"):
        return f"TP / (TP + FP + FN) with objects matched at IoU > {key[3:]} (DSB 2018)"
    return METRIC_NAMES.get(key, ("", ""))[1]


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"0.5:0.95:0.05"`` (start:stop:step, stop included) or a list ``"0.5, 0.75"``."""
    from ...common.errors import UserInputError

    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            n = int(np.floor((stop - start) / step + 1e-6)) + 1
            return tuple(round(start + i * step, 6) for i in range(max(n, 0)))
        return tuple(float(v) for v in text.replace(",", " ").split())
    except (ValueError, ZeroDivisionError) as err:
        raise UserInputError(
            f"AP thresholds {text!r}: write start:stop:step (e.g. 0.5:0.95:0.05) or a list (0.5 0.75)"
        ) from err


def table_value(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One column per record (slice, class, summary), one row per metric: fits a dock."""
    rows = metric_keys(records)
    per_slice = any(rec["slice"] != "all" for rec in records)
    headers = [column_header(rec, per_slice) for rec in records]
    data = [[_rounded(rec.get(r, "")) for rec in records] for r in rows]
    return {"data": data, "columns": headers, "index": [metric_name(r) for r in rows]}


def metric_keys(records: list[dict[str, Any]]) -> list[str]:
    """The record keys of the table's rows, in order."""
    semantic = "class" in records[0]
    keys = [c for c in (SEMANTIC_COLUMNS if semantic else INSTANCE_COLUMNS)]
    keys = [c for c in keys if c not in ("slice", "class")]
    if not semantic:
        keys += [k for k in records[0] if k.startswith("ap")]
    return keys


def summary_text(records: list[dict[str, Any]]) -> str:
    """The status line's summary: labelled scores of the last (overall) record."""
    last = records[-1]
    if "class" in last:
        return f"macro Dice {records[-2]['dice']:.3f}, micro Dice {last['dice']:.3f}"
    parts = [f"object F1 {last['f1']:.3f}"]
    first_ap = next((k for k in last if k.startswith("ap@")), None)
    if first_ap is not None:
        parts.append(f"{metric_name(first_ap)} {last[first_ap]:.3f}")
    if "ap" in last:
        parts.append(f"mean AP {last['ap']:.3f}")
    parts.append(f"pixel Dice {last['pixel_dice']:.3f}")
    return ", ".join(parts)


def column_header(record: dict[str, Any], per_slice: bool) -> str:
    """Table column of a record: ``"all"``, ``"slice 3"``, ``"class 2"``, ``"slice 3 macro"``..."""
    parts = []
    if per_slice or "class" not in record:
        parts.append("all" if record["slice"] == "all" else f"slice {record['slice']}")
    if "class" in record:
        cls = record["class"]
        parts.append(cls if isinstance(cls, str) else f"class {cls}")
    return " ".join(parts)


def _rounded(value: Any) -> Any:
    return round(float(value), 3) if isinstance(value, float | np.floating) else value


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


def legend_html() -> str:
    """The error layer's colours and meanings, as two lines of HTML."""
    swatches = [
        f"<span style='color:{_hex(c)}'>&#9632;</span> {n}" for n, c in ERROR_COLORS.values()
    ]
    return f"{', '.join(swatches[:2])}<br>{', '.join(swatches[2:])}"


def semantic_warning(records: list[dict[str, Any]], max_classes: int) -> str:
    """A warning when a semantic evaluation found more than ``max_classes`` classes ("" if not).

    So many label values are probably instance labels (one id per object), each of which a
    semantic evaluation scores as a class of its own.
    """
    n_classes = len({rec.get("class") for rec in records if "class" in rec})
    if n_classes <= max_classes:
        return ""
    return (
        f"the labels have {n_classes} values: they look like instance labels (one id "
        "per object). Semantic evaluation scores each value as a class; choose "
        "'Labels are: instance' (Advanced) to match objects."
    )
