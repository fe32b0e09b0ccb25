"""Take the README's screenshots at a laptop's 1366x768 with all three U-Net docks open.

Opens napari with the bundled sample, opens U-Net Segment, U-Net Evaluate and U-Net Train as a
user doing the whole loop would (they share the right side as tabs), segments the sample with
the built-in model (Outlines ticked), evaluates the result against the annotation, trains a
model for a few epochs on the sample, and saves one screenshot per dock with its tab raised:

- ``docs/screenshot.png``: U-Net Segment and its result;
- ``docs/screenshot_evaluate.png``: U-Net Evaluate's table;
- ``docs/screenshot_train.png``: U-Net Train with its live plot.

Usage (needs a display: run it under Xvfb at the laptop size)::

    xvfb-run -a -s "-screen 0 1366x768x24" python scripts/screenshot.py [docs/screenshot.png] \
        [--epochs 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

SIZE = (1366, 768)


def wait_until(condition, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            sys.exit("timed out")
        QApplication.processEvents()
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def shot(viewer, dock, path: Path, bottom: bool = False) -> None:
    """Raise ``dock``'s tab, scroll it to the top (``bottom``: the bottom) and save the whole
    window to ``path`` (without napari's notification pop-ups, which would cover the image)."""
    from qtpy.QtWidgets import QWidget

    window = viewer.window._qt_window
    for widget in window.findChildren(QWidget):
        if type(widget).__name__ == "NapariQtNotification":
            widget.close()
    dock.raise_()
    settle(0.3)
    bar = dock.widget().verticalScrollBar()
    bar.setValue(bar.maximum() if bottom else 0)
    settle()
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.window._qt_window.grab().save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs/screenshot.png"))
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the Train run")
    args = parser.parse_args()
    out: Path = args.out
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*SIZE)
    viewer.open_sample("napari-unet", "nuclei")
    docks = {
        name: viewer.window.add_plugin_dock_widget("napari-unet", f"U-Net {name}")
        for name in ("Segment", "Evaluate", "Train")
    }
    settle()
    (segment_dock, segment), (_, evaluate), (_, train) = docks.values()

    segment.outlines.value = True
    segment.run()
    wait_until(lambda: not segment.running)
    evaluate.prediction.value = viewer.layers["nuclei labels"]
    evaluate.ground_truth.value = viewer.layers["nuclei ground truth"]
    evaluate.run()
    wait_until(lambda: not evaluate.running)
    train.hyper.epochs.value = args.epochs
    train.run()
    wait_until(lambda: train.worker is None, timeout=1800.0)

    viewer.layers["nuclei ground truth"].visible = False
    for name in [layer.name for layer in viewer.layers if layer.name.endswith("errors")]:
        viewer.layers[name].visible = False
    viewer.layers.selection.active = viewer.layers["nuclei labels"]  # its contour: Outlines
    viewer.reset_view()
    stem, suffix = out.with_suffix(""), out.suffix or ".png"
    paths = {
        "Segment": out,
        "Evaluate": Path(f"{stem}_evaluate{suffix}"),
        "Train": Path(f"{stem}_train{suffix}"),
    }
    for name, (dock, widget) in docks.items():
        shot(viewer, dock, paths[name])
        said = widget.message.value if name == "Train" else widget.status.value
        print(f"{paths[name]}: U-Net {name}: {said}")
    segment.advanced.set_expanded(True)  # the detection and computation settings
    settle()
    shot(viewer, segment_dock, Path(f"{stem}_advanced{suffix}"), bottom=True)
    segment.advanced.set_expanded(False)
    shot(viewer, segment_dock, out)  # the Segment tab raised, as a user left it
    viewer.close()


if __name__ == "__main__":
    main()
