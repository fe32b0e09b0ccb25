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


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"0.5:0.95:0.05"`` (start:stop:step, stop included) or a list ``"0.5, 0.75"``."""
    from ..common.errors import UserInputError

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
    semantic = "class" in records[0]
    rows = [
        c
        for c in (SEMANTIC_COLUMNS if semantic else INSTANCE_COLUMNS)
        if c not in ("slice", "class")
    ]
    if not semantic:
        rows += [k for k in records[0] if k.startswith("ap")]
    per_slice = any(rec["slice"] != "all" for rec in records)
    headers = [column_header(rec, per_slice) for rec in records]
    data = [[_rounded(rec.get(r, "")) for rec in records] for r in rows]
    return {"data": data, "columns": headers, "index": rows}


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
