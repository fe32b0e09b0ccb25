"""Take the README's napari walk-through at 1366x768: sample -> Segment -> correct -> retrain
-> Segment -> Evaluate, one screenshot per step, as a user would do it.

Usage (needs a display: run it under Xvfb at the laptop size)::

    xvfb-run -a -s "-screen 0 1366x768x24" python scripts/screenshot_flow.py [docs/flow] [--epochs N]

The correction is what a user would paint: every annotated nucleus that the built-in model
missed or got wrong (IoU < 0.5 with its best prediction) is erased from the result and drawn
again from the sample's annotation (``Labels.data_setitem``, the same undoable edit as a brush
stroke). Saves ``<prefix>-1-segment.png`` ... ``<prefix>-5-evaluate.png`` and prints what each
dock said.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication
from screenshot import wait_until as _wait_until  # scripts/ is on sys.path

from napari_unet._napari import _model_registry as registry


def wait_until(condition) -> None:
    """:func:`screenshot.wait_until` with room for a retrain on the CPU (30 min)."""
    _wait_until(condition, timeout=1800.0)


def correct(labels, truth: np.ndarray) -> int:
    """Redraw the annotated objects the prediction got wrong; returns how many."""
    pred = np.asarray(labels.data)
    next_id = int(pred.max()) + 1
    fixed = 0
    for obj in np.unique(truth[truth > 0]):
        mask = truth == obj
        ids, counts = np.unique(pred[mask], return_counts=True)
        best, inter = ids[np.argmax(counts)], counts.max()
        iou = 0.0 if best == 0 else inter / np.count_nonzero(mask | (pred == best))
        if iou >= 0.5:
            continue
        touched = np.isin(pred, ids[ids != 0]) & ~mask
        if touched.any():
            labels.data_setitem(np.nonzero(touched), 0)  # erase the wrong objects
        labels.data_setitem(np.nonzero(mask), next_id)  # draw the right one
        pred = np.asarray(labels.data)
        next_id += 1
        fixed += 1
    return fixed


def shot(viewer, path: Path) -> None:
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.window._qt_window.grab().save(str(path))
    print(f"saved {path}")


def _scroll_to(widget) -> None:
    """Scroll the dock holding ``widget`` until it shows."""
    from qtpy.QtWidgets import QApplication, QScrollArea

    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parentWidget()
    if parent is not None:
        parent.ensureWidgetVisible(widget)
        QApplication.processEvents()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", nargs="?", default="docs/flow")
    parser.add_argument("--epochs", type=int, help="Retrain epochs (default: the dock's)")
    args = parser.parse_args()
    prefix = Path(args.prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.showMaximized()
    viewer.window._qt_window.resize(1366, 768)
    viewer.open_sample("napari-unet", "nuclei")
    truth = np.asarray(viewer.layers["nuclei ground truth"].data)
    viewer.layers["nuclei ground truth"].visible = False
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Segment")
    seg.confirm_replace = lambda name: False  # keep the corrections, new result beside them
    seg.run()
    wait_until(lambda: not seg.running)
    print("segment:", seg.status.value)
    shot(viewer, Path(f"{prefix}-1-segment.png"))

    labels = viewer.layers["nuclei labels"]
    print("corrected objects:", correct(labels, truth))
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    shot(viewer, Path(f"{prefix}-2-correct.png"))

    if args.epochs is not None:
        seg.retrain.epochs.value = args.epochs
    t0 = time.monotonic()
    seg.retrain.run()
    wait_until(lambda: "left" in seg.retrain.status.value)  # "batch 3/20, about 30 s left"
    _scroll_to(seg.retrain.status.native)  # the Retrain rows, at the dock's foot
    shot(viewer, Path(f"{prefix}-3-retrain.png"))
    wait_until(lambda: not seg.retrain.running)
    print(f"retrain ({time.monotonic() - t0:.0f} s):", seg.retrain.status.value)

    labels.mode = "pan_zoom"
    labels.visible = False
    # used already if it beat the built-in model on the held-back strip; else the user picks it
    print("model in use:", seg.model_source.value)
    seg.model_source.value = registry.trained_choice(seg.retrain.model_name)
    seg.run()
    wait_until(lambda: not seg.running)
    print("segment again:", seg.status.value)
    shot(viewer, Path(f"{prefix}-4-segment-again.png"))

    _, ev = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net Evaluate")
    ev.prediction.value = viewer.layers["nuclei labels (new)"]
    ev.ground_truth.value = viewer.layers["nuclei ground truth"]
    ev.run()
    wait_until(lambda: not ev.running)
    print("evaluate:", ev.status.value)
    viewer.layers["nuclei labels (new) errors"].visible = False
    shot(viewer, Path(f"{prefix}-5-evaluate.png"))
    viewer.close()


if __name__ == "__main__":
    main()
